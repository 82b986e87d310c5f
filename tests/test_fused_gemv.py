"""The one-row matmuls that compute their own input (aios/kernels/fused_gemv.py), and the decoder
layers' one-row path that runs them.

- add_rmsnorm_gemv is rms_norm(x + residual) then gemv, up to fp32 summation order; its new residual
  is torch's x + residual, in a fresh tensor; x and residual are never written.
- silu_mul_gemv is silu_and_mul then gemv, up to fp32 summation order.
- With W a permutation (one 1 per row), y is the fused step's output itself, element by element:
  each normalized (or activated) element is what the unfused kernel gives, tails included.
- A model of every dense family built with fused kernels runs them for a one-token step (and only
  then) and gives the references' logits; Qwen3-MoE's layers with experts keep the unfused path.
- Under tensor parallelism each rank's fused MLP is its slice: the ranks' outputs sum to the whole.
- On a GPU (marked gpu): real sizes, CUDA-graph replay, and the engine's batch-1 greedy tokens equal
  HF's and the unfused backend's, eager and with CUDA graphs.
On a CPU the kernels run under Triton's interpreter (tests/conftest.py switches it on).
"""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from test_backend import triton_launches  # noqa: E402, F401 (a fixture)

from aios import LLM, SamplingParams  # noqa: E402
from aios.config import ModelConfig  # noqa: E402
from aios.distributed.tp_group import TPGroup  # noqa: E402
from aios.kernels import (  # noqa: E402
    add_rmsnorm_gemv,
    add_rmsnorm_gemv_ref,
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
    gemv,
    rms_norm,
    rms_norm_ref,
    silu_and_mul,
    silu_and_mul_ref,
    silu_mul_gemv,
    silu_mul_gemv_ref,
)
from aios.layers.attention import Attention  # noqa: E402
from aios.layers.backend import TORCH, TORCH_ATTENTION, Backend  # noqa: E402
from aios.layers.layernorm import RMSNorm  # noqa: E402
from aios.layers.linear import MergedColumnParallelLinear, RowParallelLinear  # noqa: E402
from aios.models.registry import build_model  # noqa: E402
from aios.utils.context import Context  # noqa: E402
from aios.utils.loader import load_model  # noqa: E402
from aios.utils.tiny_checkpoint import make_checkpoint  # noqa: E402
from aios.utils.tiny_sliding_checkpoints import make_mistral_checkpoint  # noqa: E402
from helpers import hf_greedy, random_prompts  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DTYPES = [torch.float32, torch.bfloat16]
# (N, K, block_n, block_k): odd sizes with masked tails; several programs and several K tiles
SHAPES = [(37, 100, None, None), (130, 200, 16, 64), (5, 33, 4, 32)]
GEMV_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-3}   # as test_kernels' gemv test


def randn(*shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype).to(DEVICE)


def assert_close_ulps(actual, expected, ulps):
    eps = torch.finfo(expected.dtype).eps
    if INTERPRETED and expected.dtype == torch.bfloat16:
        ulps *= 4  # the interpreter rounds fp32 -> bf16 toward zero; GPUs round to nearest even
    torch.testing.assert_close(actual, expected, rtol=ulps * eps, atol=ulps * eps)


def assert_gemv_close(got, expected, a, w):
    """got == expected = a @ w^T up to the fp32 summation order, an ulp of each element of a and the
    final rounding: per output, a few ulps of the root sum of squares of its terms a_k * w_nk."""
    tol = GEMV_TOL[expected.dtype]
    assert got.shape == expected.shape and got.dtype == expected.dtype
    terms = (a.double() * w.double()).pow(2).sum(1).sqrt()[None, :]          # [1, N]
    assert ((got.double() - expected.double()).abs() <= tol * terms + tol * expected.double().abs()).all()


def permutation(k, dtype, gen):
    """W [k, k] with one 1 per row: y[n] = x[perm[n]] exactly, whatever the summation order."""
    perm = torch.randperm(k, generator=gen)
    return torch.eye(k)[perm].to(dtype).to(DEVICE), perm.to(DEVICE)


def norm_inputs(k, dtype, with_residual, gen):
    x = randn(1, k, dtype=dtype, gen=gen, scale=3.0)
    residual = randn(1, k, dtype=dtype, gen=gen, scale=10.0) if with_residual else None
    norm_weight = (torch.rand(k, generator=gen) + 0.5).to(dtype).to(DEVICE)
    return x, residual, norm_weight


# ---------------------------------------------------------------------------------------------
# add_rmsnorm_gemv


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("n, k, block_n, block_k", SHAPES)
def test_add_rmsnorm_gemv_is_the_norm_then_gemv(dtype, with_residual, n, k, block_n, block_k):
    gen = torch.Generator().manual_seed(n + k)
    x, residual, norm_weight = norm_inputs(k, dtype, with_residual, gen)
    w = randn(n, k, dtype=dtype, gen=gen)
    inputs_before = [t.clone() for t in (x, residual) if t is not None]
    y, new_residual = add_rmsnorm_gemv(x, residual, norm_weight, 1e-6, w, block_n=block_n, block_k=block_k)
    y_ref, residual_ref = add_rmsnorm_gemv_ref(x, residual, norm_weight, 1e-6, w)
    normed = rms_norm_ref(x if residual is None else residual_ref, norm_weight, 1e-6)
    assert_gemv_close(y, y_ref, normed, w)
    if residual is None:
        assert new_residual is x and residual_ref is x
    else:
        # the unfused Triton kernels, as the engine ran them before: same roundings on this platform
        h, unfused_residual = fused_add_rms_norm(x, residual, norm_weight, 1e-6)
        assert_gemv_close(y, gemv(h, w), normed, w)
        assert new_residual.data_ptr() not in (x.data_ptr(), residual.data_ptr())
        assert torch.equal(new_residual, unfused_residual)
        if INTERPRETED and dtype == torch.bfloat16:
            assert_close_ulps(new_residual, residual_ref, ulps=1)
        else:
            assert torch.equal(new_residual, residual_ref)       # torch's x + residual, bit for bit
    assert all(torch.equal(t, before) for t, before in zip([t for t in (x, residual) if t is not None],
                                                            inputs_before))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
def test_add_rmsnorm_gemv_normalizes_every_element_as_rms_norm_does(dtype, with_residual):
    gen = torch.Generator().manual_seed(3)
    k = 203                                                          # 7 tiles of 32, the last one short
    x, residual, norm_weight = norm_inputs(k, dtype, with_residual, gen)
    w, perm = permutation(k, dtype, gen)
    y, _ = add_rmsnorm_gemv(x, residual, norm_weight, 1e-6, w, block_n=64, block_k=32)
    normed = rms_norm_ref(x if residual is None else x + residual, norm_weight, 1e-6)
    assert_close_ulps(y, normed[:, perm], ulps=2)                    # rms_norm's own test allows 2 ulp


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
def test_add_rmsnorm_gemv_rounds_exactly_where_the_rms_norm_kernel_rounds(dtype, with_residual):
    """Inputs in sixteenths of at most 2: the sum of squares is exact in fp32 in any order, so both
    kernels get the same rstd, and every element must then be the rms_norm kernel's, bit for bit."""
    gen = torch.Generator().manual_seed(5)
    k = 203
    x = (torch.randint(-16, 17, (1, k), generator=gen) / 16).to(dtype).to(DEVICE)
    residual = (torch.randint(-16, 17, (1, k), generator=gen) / 16).to(dtype).to(DEVICE) if with_residual else None
    norm_weight = (torch.rand(k, generator=gen) + 0.5).to(dtype).to(DEVICE)
    w, perm = permutation(k, dtype, gen)
    y, _ = add_rmsnorm_gemv(x, residual, norm_weight, 1e-6, w, block_n=64, block_k=32)
    if residual is None:
        unfused = rms_norm(x, norm_weight, 1e-6)
    else:
        unfused, _ = fused_add_rms_norm(x, residual, norm_weight, 1e-6)
    assert torch.equal(y, unfused[:, perm])


# ---------------------------------------------------------------------------------------------
# silu_mul_gemv


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k, block_n, block_k", SHAPES)
def test_silu_mul_gemv_is_silu_and_mul_then_gemv(dtype, n, k, block_n, block_k):
    gen = torch.Generator().manual_seed(n * k)
    x = randn(1, 2 * k, dtype=dtype, gen=gen, scale=4.0)                 # [gate | up]
    w = randn(n, k, dtype=dtype, gen=gen)
    x_before = x.clone()
    y = silu_mul_gemv(x, w, block_n=block_n, block_k=block_k)
    activated = silu_and_mul_ref(x)
    assert_gemv_close(y, silu_mul_gemv_ref(x, w), activated, w)
    assert_gemv_close(y, gemv(silu_and_mul(x), w), activated, w)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_gemv_activates_every_element_as_silu_and_mul_does(dtype):
    gen = torch.Generator().manual_seed(4)
    k = 203
    x = randn(1, 2 * k, dtype=dtype, gen=gen, scale=4.0)
    w, perm = permutation(k, dtype, gen)
    y = silu_mul_gemv(x, w, block_n=64, block_k=32)
    assert_close_ulps(y, silu_and_mul_ref(x)[:, perm], ulps=2)      # silu_and_mul's own test allows 2 ulp
    assert torch.equal(y, silu_and_mul(x)[:, perm])                  # the unfused kernel's roundings, exactly


# ---------------------------------------------------------------------------------------------
# The decoder layers' one-row path


@pytest.fixture(scope="module", params=["qwen3", "llama-biases", "qwen2", "mistral"])
def dense_ckpt(request, tmp_path_factory) -> str:
    """A tiny checkpoint of each dense RMSNorm family; Llama with every bias, Qwen2 with its q/k/v biases."""
    path = str(tmp_path_factory.mktemp(f"tiny-{request.param}"))
    if request.param == "mistral":
        return make_mistral_checkpoint(path, sliding_window=8)
    if request.param == "llama-biases":
        return make_checkpoint(path, family="llama", attention_bias=True, mlp_bias=True)
    return make_checkpoint(path, family=request.param)


def logits_and_launches(model_dir: str, backend: Backend, prompt: list[int], launched: list[str]):
    """Logits of a prefill of `prompt` and of two one-token steps after it (the second on a fresh
    block), and the Triton kernels each step launched."""
    with torch.device(DEVICE):
        model = build_model(ModelConfig.from_dir(model_dir), backend=backend, max_model_len=64)
        load_model(model, model_dir)
        block_size, n = 8, len(prompt)
        for layer in (m for m in model.modules() if isinstance(m, Attention)):
            shape = (4, block_size, layer.num_kv_heads, layer.head_dim)
            layer.k_cache, layer.v_cache = torch.zeros(shape), torch.zeros(shape)
        i32 = dict(dtype=torch.int32)
        block_tables = torch.tensor([[3, 1, 2]], **i32)
        slot = [int(block_tables[0, p // block_size]) * block_size + p % block_size for p in range(n + 2)]
        steps = [Context(is_prefill=True, slot_mapping=torch.tensor(slot[:n]), block_tables=block_tables,
                         context_lens=torch.tensor([n], **i32), cu_seqlens_q=torch.tensor([0, n], **i32),
                         cu_seqlens_k=torch.tensor([0, n], **i32), max_seqlen_q=n, max_seqlen_k=n)]
        steps += [Context(is_prefill=False, slot_mapping=torch.tensor(slot[p:p + 1]), block_tables=block_tables,
                          context_lens=torch.tensor([p + 1], **i32)) for p in (n, n + 1)]
        inputs = [(torch.tensor(prompt), torch.arange(n)), (torch.tensor([7]), torch.tensor([n])),
                  (torch.tensor([300]), torch.tensor([n + 1]))]
        logits, launches = [], []
        with torch.inference_mode():
            for (ids, positions), context in zip(inputs, steps):
                launched.clear()
                logits.append(model.compute_logits(model(ids, positions, context)[-1:]))
                launches.append(list(launched))
        return torch.cat(logits), launches, model.config.num_hidden_layers


def test_a_one_token_step_runs_the_fused_gemvs_and_computes_what_the_references_do(
        dense_ckpt, triton_launches):  # noqa: F811 (the imported fixture)
    prompt = [11, 3, 250, 17, 9, 42, 100]                            # the next two tokens cross a block
    ref, ref_launches, _ = logits_and_launches(dense_ckpt, TORCH, prompt, triton_launches)
    assert ref_launches == [[], [], []]
    fused = Backend(TORCH_ATTENTION, fused_kernels=True, fused_one_row=True)
    got, (prefill, *decodes), num_layers = logits_and_launches(dense_ckpt, fused, prompt, triton_launches)
    assert (got - ref).abs().max().item() < 1e-4
    assert "_add_rmsnorm_gemv_kernel" not in prefill and "_silu_mul_gemv_kernel" not in prefill
    for decode in decodes:
        # per layer: 2 norms into qkv_proj and gate_up_proj, SiLU into down_proj, o_proj a plain gemv
        assert decode.count("_add_rmsnorm_gemv_kernel") == 2 * num_layers
        assert decode.count("_silu_mul_gemv_kernel") == decode.count("_gemv_kernel") == num_layers
        assert decode.count("_rms_norm_kernel") == 1                # the final norm, before lm_head
        assert "_silu_and_mul_kernel" not in decode


class OneProcessTP(TPGroup):
    """A rank of a TP group simulated in this process: the test sums the ranks' partial outputs itself."""

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_the_fused_mlp_under_tp_sums_to_the_unsplit_mlp():
    """norm -> gate_up_proj (column-parallel: each rank normalizes the whole row) -> SiLU * up ->
    down_proj (row-parallel: each rank activates its own slice of gate and up), on two ranks."""
    gen = torch.Generator().manual_seed(6)
    hidden, inter, eps = 64, 96, 1e-6
    x, residual, norm_weight = norm_inputs(hidden, torch.float32, True, gen)
    gate, up, down = (randn(*shape, dtype=torch.float32, gen=gen, scale=0.2)
                      for shape in ((inter, hidden), (inter, hidden), (hidden, inter)))
    fused = Backend(TORCH_ATTENTION, fused_kernels=True)
    norm = RMSNorm(hidden, eps, fused).to(DEVICE)
    norm.weight.data.copy_(norm_weight)
    partial = []
    for rank in range(2):
        tp = OneProcessTP(rank, 2)
        gate_up_proj = MergedColumnParallelLinear(hidden, [inter, inter], tp=tp, backend=fused).to(DEVICE)
        down_proj = RowParallelLinear(inter, hidden, tp=tp, backend=fused).to(DEVICE)
        gate_up_proj.weight_loader(gate_up_proj.weight, gate, 0)
        gate_up_proj.weight_loader(gate_up_proj.weight, up, 1)
        down_proj.weight_loader(down_proj.weight, down)
        gate_up, new_residual = gate_up_proj.forward_after_norm(norm, x, residual)
        partial.append(down_proj.forward_after_silu_and_mul(gate_up))
    h, expected_residual = fused_add_rms_norm_ref(x, residual, norm_weight, eps)
    expected = torch.nn.functional.silu(h @ gate.T) * (h @ up.T) @ down.T
    assert torch.equal(new_residual, expected_residual)
    torch.testing.assert_close(partial[0] + partial[1], expected, atol=1e-4, rtol=1e-4)


def test_qwen3_moe_layers_with_experts_keep_the_unfused_path(tmp_path):
    from aios.layers.backend import TRITON_ATTENTION
    from aios.utils.tiny_checkpoint_qwen3_moe import make_qwen3_moe_checkpoint

    path = make_qwen3_moe_checkpoint(str(tmp_path / "moe"), num_layers=2, mlp_only_layers=[0])
    with torch.device("meta"):
        model = build_model(ModelConfig.from_dir(path), max_model_len=64,
                            backend=Backend(TRITON_ATTENTION, fused_kernels=True, fused_one_row=True))
    # layer 0 is a plain Qwen3 layer (its dense MLP); layer 1's experts have no fused one-row path
    assert [layer.fuse_one_row for layer in model.model.layers] == [True, False]


# ---------------------------------------------------------------------------------------------
# GPU: real sizes, a CUDA graph of the layer's chain, the engine at batch 1

gpu = pytest.mark.gpu


@gpu
@pytest.mark.parametrize("n, k", [(4096, 1024), (6144, 1024), (6144, 4096), (24576, 4096)])
def test_add_rmsnorm_gemv_is_the_norm_then_gemv_at_real_sizes(n, k):
    gen = torch.Generator().manual_seed(n)
    x, residual, norm_weight = norm_inputs(k, torch.bfloat16, True, gen)
    w = randn(n, k, dtype=torch.bfloat16, gen=gen, scale=k ** -0.5)
    y, new_residual = add_rmsnorm_gemv(x, residual, norm_weight, 1e-6, w)
    h, unfused_residual = fused_add_rms_norm(x, residual, norm_weight, 1e-6)
    assert torch.equal(new_residual, unfused_residual) and torch.equal(new_residual, x + residual)
    assert_gemv_close(y, gemv(h, w), h, w)
    y_first, first_residual = add_rmsnorm_gemv(x, None, norm_weight, 1e-6, w)     # a model's first layer
    assert first_residual is x
    assert_gemv_close(y_first, gemv(rms_norm(x, norm_weight, 1e-6), w), rms_norm(x, norm_weight, 1e-6), w)


@gpu
@pytest.mark.parametrize("n, k", [(1024, 3072), (4096, 12288), (1024, 1536)])   # 0.6B, 8B, 0.6B at TP=2
def test_silu_mul_gemv_is_silu_and_mul_then_gemv_at_real_sizes(n, k):
    gen = torch.Generator().manual_seed(n + k)
    x = randn(1, 2 * k, dtype=torch.bfloat16, gen=gen, scale=2.0)
    w = randn(n, k, dtype=torch.bfloat16, gen=gen, scale=k ** -0.5)
    activated = silu_and_mul(x)
    assert_gemv_close(silu_mul_gemv(x, w), gemv(activated, w), activated, w)


@gpu
def test_the_one_row_chain_replays_in_a_cuda_graph_with_new_inputs():
    """norm -> gate_up -> SiLU -> down -> norm -> qkv, as a layer chains them (each kernel reads what
    the one before wrote: PDL's wait must hold), captured once, replayed on new inputs: the replay
    equals the same kernels run eagerly, bit for bit, and the unfused kernels to bf16 precision."""
    gen = torch.Generator().manual_seed(0)
    hidden, inter, dtype = 1024, 3072, torch.bfloat16
    x, residual, norm_weight = norm_inputs(hidden, dtype, True, gen)
    w_gate_up = randn(2 * inter, hidden, dtype=dtype, gen=gen, scale=hidden ** -0.5)
    w_down = randn(hidden, inter, dtype=dtype, gen=gen, scale=inter ** -0.5)
    w_qkv = randn(4096, hidden, dtype=dtype, gen=gen, scale=hidden ** -0.5)

    def chain(fused: bool):
        if fused:
            gate_up, r = add_rmsnorm_gemv(x, residual, norm_weight, 1e-6, w_gate_up)
            down = silu_mul_gemv(gate_up, w_down)
            return add_rmsnorm_gemv(down, r, norm_weight, 1e-6, w_qkv)
        h, r = fused_add_rms_norm(x, residual, norm_weight, 1e-6)
        down = gemv(silu_and_mul(gemv(h, w_gate_up)), w_down)
        h, r = fused_add_rms_norm(down, r, norm_weight, 1e-6)
        return gemv(h, w_qkv), r

    chain(True)                                                      # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        qkv, new_residual = chain(True)
    for _ in range(3):
        x.copy_(randn(1, hidden, dtype=dtype, gen=gen, scale=3.0))
        residual.copy_(randn(1, hidden, dtype=dtype, gen=gen, scale=10.0))
        graph.replay()
        torch.cuda.synchronize()
        eager_qkv, eager_residual = chain(True)
        assert torch.equal(qkv, eager_qkv) and torch.equal(new_residual, eager_residual)
        unfused_qkv, unfused_residual = chain(False)
        for got, expected in ((qkv, unfused_qkv), (new_residual, unfused_residual)):
            assert (got.float() - expected.float()).abs().max().item() < 0.02 * expected.float().abs().max().item()


def assert_batch_1_decode_equals_hf(ckpt, launches, seed, kernels, **switches):
    """One request at a time, so every decode step is one row, with `switches` on: HF's greedy
    tokens replayed from the batch-1 CUDA graph (every one of `kernels` launched) and run eagerly
    (kernels[0] launched). Returns (engine kwargs, HF's tokens, the one-at-a-time runner)."""
    prompts = random_prompts(512, [5, 17, 40], seed=seed)
    expected = hf_greedy(ckpt, prompts, 16)
    kw = dict(device="cuda", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=64, max_model_len=512,
              max_num_seqs=4, **switches)                          # graphs for batches 1, 2, 4
    params = SamplingParams(temperature=0.0, max_tokens=16)

    def one_at_a_time(llm):
        return [llm.generate([p], params, use_tqdm=False)[0]["token_ids"] for p in prompts]

    with LLM(ckpt, **kw) as graphs:
        assert 1 in graphs.model_runner.cuda_graphs.graphs, "no batch-1 CUDA graph was captured"
        assert all(kernel in launches for kernel in kernels)
        assert one_at_a_time(graphs) == expected
    with LLM(ckpt, enforce_eager=True, **kw) as eager:
        launches.clear()
        assert one_at_a_time(eager) == expected
        assert launches.count(kernels[0]) > 0
    return kw, expected, one_at_a_time


@gpu
def test_batch_1_decode_gives_hf_and_the_unfused_backends_greedy_tokens(
        dense_ckpt, triton_launches):  # noqa: F811 (the imported fixture)
    """One request at a time, so every decode step is one row: forward_one_row, replayed from the
    batch-1 CUDA graph and run eagerly, against HF and against fused_kernels=False."""
    kw, expected, one_at_a_time = assert_batch_1_decode_equals_hf(
        dense_ckpt, triton_launches, 41, ("_add_rmsnorm_gemv_kernel", "_silu_mul_gemv_kernel"),
        fuse_norm_into_gemv=True)
    with LLM(dense_ckpt, fused_kernels=False, **kw) as unfused:
        assert one_at_a_time(unfused) == expected


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_batch_1_decode_under_tp2_equals_one_gpu(tiny_ckpt):
    """Each rank normalizes the whole row into its qkv / gate_up columns and activates its slice into
    down_proj, then the all-reduce: the batch-1 tokens of TP=2 (CUDA graphs on both ranks) are TP=1's."""
    prompts = random_prompts(512, [4, 23], seed=42)
    params = SamplingParams(temperature=0.0, max_tokens=16)
    kw = dict(device="cuda", dtype="float32", gpu_memory_utilization=0.3, max_num_seqs=4, fuse_norm_into_gemv=True)
    tokens = {}
    for tp in (1, 2):
        with LLM(tiny_ckpt, tensor_parallel_size=tp, **kw) as llm:
            tokens[tp] = [llm.generate([p], params, use_tqdm=False)[0]["token_ids"] for p in prompts]
        torch.cuda.empty_cache()
    assert tokens[2] == tokens[1]
