"""The fused MoE kernel (aios/kernels/fused_moe.py) against its reference, the router against HF's,
and the stacked-expert layer's loading and TP split (lesson 16). The Triton cases run on the CPU
under TRITON_INTERPRET=1 at tiny shapes (the interpreter is slow), and on the GPU at real ones."""

import pytest
import torch

from aios.kernels.fused_moe import fused_moe, fused_moe_ref
from aios.kernels.moe_align import (
    _moe_align_chunked,
    _moe_align_one_program,
    max_padded_rows,
    moe_align_block_size,
    moe_align_block_size_ref,
)
from aios.layers.fused_moe import FusedMoE, select_experts


def random_moe(num_tokens: int, num_experts: int, top_k: int, hidden: int, inter: int, dtype=torch.float32,
               device="cpu", seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(num_tokens, hidden, generator=g).to(device, dtype)
    w13 = (torch.randn(num_experts, 2 * inter, hidden, generator=g) * hidden ** -0.5).to(device, dtype)
    w2 = (torch.randn(num_experts, hidden, inter, generator=g) * inter ** -0.5).to(device, dtype)
    logits = torch.randn(num_tokens, num_experts, generator=g).to(device, dtype)
    topk_weights, topk_ids = select_experts(logits, top_k, renormalize=True)
    return x, w13, w2, topk_weights, topk_ids


def loop_over_routed_pairs(x, w13, w2, topk_weights, topk_ids):
    """The MoE the way HF writes it: for each expert, only the tokens routed to it."""
    out = torch.zeros_like(x)
    for e in range(w13.shape[0]):
        tok, j = torch.where(topk_ids == e)
        gate, up = (x[tok] @ w13[e].t()).chunk(2, dim=-1)
        out.index_add_(0, tok, ((torch.nn.functional.silu(gate) * up) @ w2[e].t()) * topk_weights[tok, j, None])
    return out


def test_a_decode_batch_takes_the_gemv_path_and_a_larger_one_the_grouped_gemm(monkeypatch):
    import aios.kernels.fused_moe as module

    taken = []
    monkeypatch.setattr(module, "fused_moe_gemv", lambda *a: taken.append("gemv") or fused_moe_ref(*a))
    monkeypatch.setattr(module, "moe_align_block_size", lambda *a: taken.append("sorted") or 1 / 0)
    fused_moe(*random_moe(module.MAX_PAIRS_GEMV // 2, 8, 2, 32, 16))
    with pytest.raises(ZeroDivisionError):
        fused_moe(*random_moe(module.MAX_PAIRS_GEMV // 2 + 1, 8, 2, 32, 16))
    assert taken == ["gemv", "sorted"]


def test_bf16_gemv_path_rounds_where_the_grouped_gemm_path_does():
    """bf16 agrees with the fp32 reference of the same weights to a few bf16 ulps of the output, on
    both paths. Interpreted, 4x that: the interpreter rounds fp32 -> bf16 toward zero, and the gemv
    paths round up to five times inside their kernels."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args = random_moe(2, 16, 4, 64, 32, dtype=torch.bfloat16, device=device)
    want = fused_moe_ref(*(a.float() if a.is_floating_point() else a for a in args))
    ulps = 4 * (4 if device == "cpu" else 1)
    for path, kwargs in PATHS.items():
        got = fused_moe(*args, **kwargs).float()
        assert (got - want).abs().max() <= ulps * 2 ** -8 * want.abs().max(), (path, (got - want).abs().max())


PATHS = {"pair-gemv": dict(gemv=True), "grouped-gemm-silu-in-epilogue": dict(gemv=False, silu_in_gemm=True),
         "grouped-gemm-silu-launch": dict(gemv=False, silu_in_gemm=False)}


def test_reference_equals_the_loop_over_routed_tokens():
    args = random_moe(13, 8, 2, 32, 16)
    assert torch.allclose(fused_moe_ref(*args), loop_over_routed_pairs(*args), atol=1e-6)


def test_align_groups_pairs_by_expert_padded_to_the_block():
    topk_ids = torch.tensor([[0, 3], [3, 1], [0, 3]])           # pairs 0..5: experts 0,3,3,1,0,3
    s = 6                                                       # the sentinel: T * k
    for layout in (moe_align_block_size(topk_ids, block_m=4, num_experts=4),     # Triton (interpreted on a CPU)
                   moe_align_block_size_ref(topk_ids, 4, 4, max_padded_rows(6, 4, 4))):
        sorted_ids, expert_ids, num_post = layout
        assert sorted_ids[:12].tolist() == [0, 4, s, s, 3, s, s, s, 1, 2, 5, s]
        assert expert_ids[:3].tolist() == [0, 1, 3]
        assert num_post.item() == 12
        assert sorted_ids.numel() >= 12 and (sorted_ids[12:] == s).all()


@pytest.mark.parametrize("num_tokens, top_k, num_experts, block_m", [(1, 8, 128, 16), (7, 3, 8, 16), (32, 8, 128, 32),
                                                                     (7, 3, 8, 12)])
def test_one_program_layout_equals_the_sorted_one(num_tokens, top_k, num_experts, block_m):
    """The decode path's Triton layout kernel (interpreted on a CPU) lays out what the torch sort does."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(num_tokens)
    topk_ids = torch.stack([torch.randperm(num_experts, generator=g)[:top_k] for _ in range(num_tokens)])
    want = moe_align_block_size_ref(topk_ids, block_m, num_experts, max_padded_rows(topk_ids.numel(), block_m,
                                                                                     num_experts))
    got = _moe_align_one_program(topk_ids.to(device), block_m, num_experts, want[0].numel())
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)


@pytest.mark.parametrize("num_tokens, top_k, num_experts, block_m", [(33, 8, 128, 16), (100, 2, 4, 16),
                                                                     (257, 3, 8, 64), (100, 2, 4, 24)])
def test_chunked_layout_equals_the_sorted_one(num_tokens, top_k, num_experts, block_m):
    """The Triton layout of many pairs (count per chunk, scan, place; interpreted on a CPU) lays out
    what the torch sort does, pairs ascending within each expert, across chunk boundaries."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(num_tokens)
    topk_ids = torch.stack([torch.randperm(num_experts, generator=g)[:top_k] for _ in range(num_tokens)])
    if num_experts == 4:
        topk_ids[:60] = torch.tensor([2, 3])        # one expert's run spans several chunks, some none
    want = moe_align_block_size_ref(topk_ids, block_m, num_experts, max_padded_rows(topk_ids.numel(), block_m,
                                                                                     num_experts))
    got = _moe_align_chunked(topk_ids.to(device), block_m, num_experts, want[0].numel())
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)


@pytest.mark.parametrize("num_tokens, num_experts, top_k, hidden, inter", [
    (1, 4, 2, 32, 16),          # decode: one token, most experts empty
    (7, 8, 2, 48, 40),          # K and N not multiples of the tiles (masked tails)
    (20, 4, 3, 32, 32),         # several blocks per expert
])
@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_triton_fused_moe_equals_reference_interpreted_or_on_the_gpu(num_tokens, num_experts, top_k, hidden, inter,
                                                                     path):
    """Each of fused_moe's paths: the sorted layout and grouped GEMMs (the SiLU in the first GEMM's
    epilogue, or its own launch), and the decode gemvs with the SiLU and the top-k sum folded in
    (two tokens sharing an expert included: (20, 4, 3))."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args = random_moe(num_tokens, num_experts, top_k, hidden, inter, device=device)
    got, want = fused_moe(*args, **PATHS[path]), fused_moe_ref(*args)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()


def test_router_picks_what_hf_picks_ties_included():
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    for norm in (False, True):
        cfg = Qwen3MoeConfig(hidden_size=4, num_experts=6, num_experts_per_tok=2, norm_topk_prob=norm)
        router = Qwen3MoeTopKRouter(cfg)
        with torch.no_grad():
            router.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0],     # experts 0 and 2 tie
                                              [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]))  # ... and 4
        x = torch.tensor([[2.0, 0, 0, 0], [0, 1, 1, 0], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 3]])
        logits, hf_weights, hf_ids = router(x)
        weights, ids = select_experts(logits, 2, renormalize=norm)
        assert torch.equal(ids, hf_ids) and torch.equal(weights, hf_weights)
        # a three-way tie: torch.topk decides (not "lowest id first"), the same call as HF's
        assert set(ids[0].tolist()) <= {0, 2, 4} and weights[0, 0] == weights[0, 1]


@pytest.mark.parametrize("norm", [False, True])
def test_renormalized_top_k_weights_sum_to_one_and_plain_ones_do_not(norm):
    logits = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    weights, _ = select_experts(logits, 2, renormalize=norm)
    sums = weights.sum(-1)
    assert torch.allclose(sums, torch.ones(5)) == norm


def test_tp_shards_of_the_experts_sum_to_the_whole():
    """Each rank's slice of every expert's intermediate dimension; summed outputs equal TP=1's
    (the all-reduce, done here by hand)."""
    from aios.distributed.tp_group import TPGroup

    x, w13, w2, topk_weights, topk_ids = random_moe(9, 4, 2, 32, 16)
    inter = w2.shape[2]
    whole = fused_moe_ref(x, w13, w2, topk_weights, topk_ids)
    parts = []
    for rank in range(2):
        layer = FusedMoE(4, 32, inter, tp=TPGroup(rank, 2, None))
        for e in range(4):
            gate, up = w13[e].chunk(2)
            layer.weight_loader(layer.gate_up_proj, gate, 0, e)
            layer.weight_loader(layer.gate_up_proj, up, 1, e)
            layer.weight_loader(layer.down_proj, w2[e], None, e)
        assert layer.gate_up_proj.shape == (4, inter, 32) and layer.down_proj.shape == (4, 32, inter // 2)
        parts.append(layer.fused_moe(x, layer.gate_up_proj, layer.down_proj, topk_weights, topk_ids))
    assert torch.allclose(parts[0] + parts[1], whole, atol=1e-5)


def test_a_stacked_expert_tensor_is_refused_by_name():
    layer = FusedMoE(4, 32, 16)
    with pytest.raises(ValueError, match="one expert at a time"):
        layer.weight_loader(layer.gate_up_proj, torch.zeros(4, 32, 32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("num_tokens", [1, 8, 200, 4096])
def test_triton_fused_moe_equals_reference_at_qwen3_30b_a3b_expert_shapes(num_tokens, dtype):
    """128 experts, top-8, hidden 2048, moe_intermediate 768 (one TP=1 layer of Qwen3-30B-A3B); the
    router's fp32 weights and int32 ids, as the engine's Triton router gives them; both paths where
    the gemv path is meant to serve (<= 8 tokens)."""
    x, w13, w2, topk_weights, topk_ids = random_moe(num_tokens, 128, 8, 2048, 768, dtype=dtype, device="cuda")
    topk_weights, topk_ids = topk_weights.float(), topk_ids.to(torch.int32)
    want = fused_moe_ref(x.float(), w13.float(), w2.float(), topk_weights, topk_ids)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for path, kwargs in PATHS.items():
        if num_tokens > 8 and kwargs["gemv"]:
            continue
        got = fused_moe(x, w13, w2, topk_weights, topk_ids, **kwargs)
        assert torch.allclose(got.float(), want, atol=tol, rtol=tol), (path, (got.float() - want).abs().max())


def assert_replays_inside_a_cuda_graph(moe, num_tokens: int, **kwargs) -> None:
    """`moe` (fused_moe or a variant) captured once, then replayed on new inputs and routing, equals
    the reference on those."""
    x, w13, w2, topk_weights, topk_ids = random_moe(num_tokens, 16, 2, 256, 128, dtype=torch.bfloat16, device="cuda")
    moe(x, w13, w2, topk_weights, topk_ids, **kwargs)                 # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = moe(x, w13, w2, topk_weights, topk_ids, **kwargs)
    new_x, _, _, new_w, new_ids = random_moe(num_tokens, 16, 2, 256, 128, dtype=torch.bfloat16, device="cuda", seed=3)
    x.copy_(new_x)
    topk_weights.copy_(new_w)
    topk_ids.copy_(new_ids)
    graph.replay()
    want = fused_moe_ref(x, w13, w2, topk_weights, topk_ids)
    assert torch.allclose(out.float(), want.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_fused_moe_replays_inside_a_cuda_graph(path):
    assert_replays_inside_a_cuda_graph(fused_moe, 8, **PATHS[path])


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 2, 32, 33, 64, 2048])
def test_layout_equals_the_reference_at_qwen3_30b_a3b_routing_on_the_gpu(num_tokens):
    """128 experts, top-8, int32 ids from the Triton router, at the block size fused_moe picks: every
    entry of the three outputs (the buffers are not filled first: the kernels must write them all)."""
    from aios.kernels.fused_moe import fused_moe_config
    from aios.kernels.moe_tiles import MoeTiles
    from aios.kernels.topk_softmax import topk_softmax

    logits = torch.randn(num_tokens, 128, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    _, topk_ids = topk_softmax(logits, 8, True)
    tiles = MoeTiles.load(128, 768, torch.cuda.get_device_name())           # the engine's, where measured
    block_m = fused_moe_config(num_tokens, 8, topk_ids.device, tiles)["block_m"]
    torch.cuda.empty_cache()
    torch.full((1 << 22,), -7, dtype=torch.int32, device="cuda")          # leave garbage where the outputs go
    got = moe_align_block_size(topk_ids, block_m, 128)
    want = moe_align_block_size_ref(topk_ids, block_m, 128, max_padded_rows(num_tokens * 8, block_m, 128))
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 2])
def test_decode_moe_layer_of_pdl_kernels_replays_in_a_cuda_graph(num_tokens):
    """Gate gemv -> topk_softmax -> the two expert gemvs, each launched with PDL on Hopper, captured
    and replayed with new inputs: what an engine decode step does in each MoE layer."""
    from aios.kernels.gemv import gemv
    from aios.kernels.topk_softmax import topk_softmax, topk_softmax_ref

    x, w13, w2, _, _ = random_moe(num_tokens, 128, 8, 2048, 768, dtype=torch.bfloat16, device="cuda")
    gate = (torch.randn(128, 2048, device="cuda") * 2048 ** -0.5).to(torch.bfloat16)

    def router_logits():
        return gemv(x, gate) if num_tokens == 1 else x @ gate.t()

    def layer():
        return fused_moe(x, w13, w2, *topk_softmax(router_logits(), 8, True))
    layer()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = layer()
    x.copy_(torch.randn_like(x))
    graph.replay()
    weights, ids = topk_softmax_ref(router_logits(), 8, True)               # the same logits, eagerly
    want = fused_moe_ref(x.float(), w13.float(), w2.float(), weights, ids)
    assert torch.allclose(out.float(), want, atol=3e-2, rtol=3e-2), (out.float() - want).abs().max()


@pytest.mark.skipif(torch.cuda.is_available(), reason="counts the GPU path's launches in Triton's CPU interpreter")
def test_the_gpu_paths_moe_layer_is_four_launches_at_batch_1_and_no_torch_routing_at_33():
    """benchmarks/moe_launches.py's count (the router's gate included): at 1 token the gate's gemv,
    topk_softmax and the two expert gemvs, no torch op; at 33 tokens (264 pairs: the chunked layout)
    no torch op but the gate's mm and the top-k sum, and the SiLU inside the first GEMM."""
    from benchmarks.moe_launches import count, moe_block

    block = moe_block(hidden=64, inter=32)
    router, experts = block.select_experts, block.experts.fused_moe
    kernels, ops = count(block, torch.randn(1, 64).to(torch.bfloat16), router, experts)
    assert sorted(kernels) == ["gemv_kernel", "moe_down_sum_kernel", "moe_gate_up_silu_kernel", "topk_softmax_kernel"]
    assert sum(kernels.values()) == 4 and not ops
    kernels, ops = count(block, torch.randn(33, 64).to(torch.bfloat16), router, experts)
    assert set(ops) == {"aten::mm", "aten::sum"} and sum(ops.values()) == 2
    assert "silu_and_mul_kernel" not in kernels and kernels["fused_moe_kernel"] == 2
    assert kernels["moe_count_kernel"] == kernels["moe_scan_kernel"] == kernels["moe_place_kernel"] == 1
