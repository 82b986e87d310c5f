"""The TMA variant of the fused MoE's grouped GEMM (aios/kernels/fused_moe_tma.py) against the
reference, as tests/test_fused_moe.py checks the default kernel (lesson 16).

Triton's CPU interpreter runs host-side tensor descriptors (a TensorDescriptor argument's loads
become numpy gathers with out-of-bounds zeros), so the kernel's indexing, the persistent loop over
work items and the padding rules are checked here at tiny shapes; what TMA itself does (the boxes,
the swizzle, the barriers) only the GPU tests below check, at Qwen3-30B-A3B's expert shapes. That
it compiles for sm_90 at the engine's tiles is tests/test_triton_compiles_for_hopper.py's.
"""

import pytest
import torch
from test_fused_moe import assert_replays_inside_a_cuda_graph, random_moe

from aios.kernels.fused_moe import fused_moe
from aios.kernels.fused_moe_tma import _grouped_gemm_tma, fused_moe_ref, fused_moe_tma, fused_moe_tma_config
from aios.kernels.moe_align import moe_align_block_size

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRIDS = {"program-per-work-item": None, "persistent": 1}


@pytest.mark.parametrize("num_tokens, num_experts, top_k, hidden, inter", [
    (3, 4, 2, 32, 16),          # 6 pairs: most experts empty, one row block each
    (7, 8, 2, 48, 40),          # K and N not multiples of the tiles: TMA's zero columns, masked rows
    (20, 4, 3, 32, 32),         # several row blocks per expert: more work items than the 4 CPU "SMs"
])
@pytest.mark.parametrize("silu_in_gemm", [True, False], ids=["silu-in-epilogue", "silu-launch"])
@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
def test_tma_fused_moe_equals_reference_interpreted_or_on_the_gpu(num_tokens, num_experts, top_k, hidden, inter,
                                                                  silu_in_gemm, grid):
    args = random_moe(num_tokens, num_experts, top_k, hidden, inter, device=DEVICE)
    got = fused_moe_tma(*args, gemv=False, silu_in_gemm=silu_in_gemm, programs_per_sm=GRIDS[grid])
    want = fused_moe_ref(*args)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()


def first_gemm(x, w13, topk_weights, topk_ids, cfg, num_experts):
    """The w13 GEMM alone at cfg, its [T * k, 2I] output, and what it should hold."""
    num_pairs, top_k = topk_ids.numel(), topk_ids.shape[1]
    sorted_ids, expert_ids, num_post = moe_align_block_size(topk_ids, cfg["block_m"], num_experts)
    c = torch.empty(num_pairs, w13.shape[1], device=x.device)
    _grouped_gemm_tma(x, w13, c, topk_weights.reshape(-1), sorted_ids, expert_ids, num_post, num_pairs, top_k, False,
                      cfg)
    pairs = torch.arange(num_pairs, device=x.device)
    want = torch.einsum("ph,pnh->pn", x[pairs // top_k], w13[topk_ids.reshape(-1)])
    return c, want


@pytest.mark.parametrize("num_programs", [1, 3])
def test_persistent_programs_each_take_several_work_items(num_programs):
    """20 tokens * top-3 over 4 experts: >= 4 row blocks of 16 x 2 N tiles of 32 (2I = 64), looped
    over by 1 or 3 programs (3: the items do not split evenly)."""
    x, w13, _, topk_weights, topk_ids = random_moe(20, 4, 3, 32, 32, device=DEVICE)
    cfg = {**fused_moe_tma_config(20, 3, torch.device(DEVICE)), "num_programs": num_programs}
    c, want = first_gemm(x, w13, topk_weights, topk_ids, cfg, 4)
    assert torch.allclose(c, want, atol=1e-5), (c - want).abs().max()


@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
def test_padding_rows_and_blocks_past_the_padded_count_write_nothing(grid):
    """Sentinel rows (pair == T * k) store nothing (the row just past C stays NaN), and row blocks at
    or past num_tokens_post_padded are no work item even where they name a real pair: pair p, taken
    out of its own block (a sentinel there), is named only past the count, and its row stays NaN."""
    x, w13, _, topk_weights, topk_ids = random_moe(5, 8, 2, 32, 16, device=DEVICE)
    num_pairs = topk_ids.numel()
    cfg = fused_moe_tma_config(5, 2, torch.device(DEVICE), programs_per_sm=GRIDS[grid])
    sorted_ids, expert_ids, num_post = moe_align_block_size(topk_ids, cfg["block_m"], 8)
    assert (sorted_ids[:num_post.item()] == num_pairs).any(), "the layout should hold padding rows"
    assert sorted_ids.numel() > num_post.item(), "the layout should hold blocks past the padded count"
    p = sorted_ids[0].item()
    sorted_ids[0] = num_pairs
    sorted_ids[num_post.item():] = p
    expert_ids[num_post.item() // cfg["block_m"]:] = expert_ids[0]
    c = torch.full((num_pairs + 1, 32), float("nan"), device=DEVICE)       # [T * k + 1, 2I]: one row past
    _grouped_gemm_tma(x, w13, c[:num_pairs], topk_weights.reshape(-1), sorted_ids, expert_ids, num_post,
                      num_pairs, 2, False, cfg)
    assert c[num_pairs].isnan().all() and c[p].isnan().all()
    _, want = first_gemm(x, w13, topk_weights, topk_ids, cfg, 8)
    rows = torch.arange(num_pairs, device=DEVICE) != p
    assert torch.allclose(c[:num_pairs][rows], want[rows], atol=1e-5), (c[:num_pairs][rows] - want[rows]).abs().max()


def test_weights_whose_rows_are_not_16_byte_aligned_are_refused_by_name():
    args = list(random_moe(20, 4, 2, 36, 16, dtype=torch.bfloat16, device=DEVICE))   # 36 * 2 bytes a row
    with pytest.raises(ValueError, match="16-byte aligned"):
        fused_moe_tma(*args, gemv=False)


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [64, 256, 512, 4096])
def test_tma_fused_moe_equals_reference_at_qwen3_30b_a3b_expert_shapes(num_tokens):
    """128 experts, top-8, hidden 2048, moe_intermediate 768, bf16, the router's fp32 weights and
    int32 ids; the engine's tiles where the H200 has a table; both grids, both SiLU placements; and
    the default kernel's output at the same tiles, to the same tolerance."""
    from aios.kernels.moe_tiles import MoeTiles

    x, w13, w2, topk_weights, topk_ids = random_moe(num_tokens, 128, 8, 2048, 768, dtype=torch.bfloat16,
                                                    device="cuda")
    topk_weights, topk_ids = topk_weights.float(), topk_ids.to(torch.int32)
    want = fused_moe_ref(x.float(), w13.float(), w2.float(), topk_weights, topk_ids)
    tiles = MoeTiles.load(128, 768, torch.cuda.get_device_name())
    default = fused_moe(x, w13, w2, topk_weights, topk_ids, gemv=False, tiles=tiles).float()
    assert torch.allclose(default, want, atol=3e-2, rtol=3e-2)
    for grid, programs_per_sm in {**GRIDS, "persistent-2": 2}.items():
        for silu_in_gemm in (True, False):
            got = fused_moe_tma(x, w13, w2, topk_weights, topk_ids, gemv=False, silu_in_gemm=silu_in_gemm,
                                tiles=tiles, programs_per_sm=programs_per_sm).float()
            assert torch.allclose(got, want, atol=3e-2, rtol=3e-2), (grid, silu_in_gemm, (got - want).abs().max())
            assert (got - default).abs().max() <= 3e-2 * want.abs().max(), (grid, silu_in_gemm)


@pytest.mark.gpu
@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
def test_tma_fused_moe_replays_inside_a_cuda_graph(grid):
    """The weight descriptors are kernel parameters the graph keeps; new inputs and routing replay."""
    assert_replays_inside_a_cuda_graph(fused_moe_tma, 64, gemv=False, programs_per_sm=GRIDS[grid])


def test_the_tma_table_keeps_its_grids_in_a_file_of_its_own(tmp_path, monkeypatch):
    """tune_moe.py --gemm tma writes its table beside the committed one, never over it, and each
    entry's programs_per_sm (None included) comes back."""
    from aios.kernels.moe_tiles import MoeTiles, tiles_file_name

    tiles = MoeTiles(((64, dict(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3, silu_in_gemm=True,
                                programs_per_sm=None)),
                      (512, dict(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=3, silu_in_gemm=True,
                                 programs_per_sm=2))))
    path = tiles.save(128, 768, "NVIDIA H200", tmp_path, gemm="tma")
    assert path.name != tiles_file_name(128, 768, "NVIDIA H200")
    assert path == tmp_path / tiles_file_name(128, 768, "NVIDIA H200", gemm="tma")
    assert MoeTiles.load(128, 768, "NVIDIA H200", tmp_path, gemm="tma") == tiles
    assert MoeTiles.load(128, 768, "NVIDIA H200", tmp_path) is None
    monkeypatch.setattr("aios.kernels.device._cuda_sm_count", lambda index: 132)     # as on the H200
    for num_tokens, num_programs in ((64, None), (512, 2 * 132)):
        cfg = fused_moe_tma_config(num_tokens, 8, torch.device("cuda", 0),
                                   MoeTiles.load(128, 768, "NVIDIA H200", tmp_path, gemm="tma"))
        assert "programs_per_sm" not in cfg and cfg["num_programs"] == num_programs


def test_tune_moe_times_each_tma_grid_right_after_the_default_kernel_at_its_tiles(monkeypatch):
    import argparse
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))    # its own imports
    from benchmarks.tune_moe import gemm_candidates

    args = argparse.Namespace(tiles="base", silu_in_gemm="on", gemm="tma", programs_per_sm=[0, 1], top_k=8,
                              experts=128)
    pairs = gemm_candidates(args, 256)
    assert [gemm for gemm, _ in pairs[:3]] == ["triton", "tma", "tma"] and len(pairs) % 3 == 0
    for (_, base), (_, grid0), (_, grid1) in zip(pairs[::3], pairs[1::3], pairs[2::3]):
        assert grid0 == {**base, "programs_per_sm": None} and grid1 == {**base, "programs_per_sm": 1}
    assert all(gemm == "triton" for gemm, _ in gemm_candidates(argparse.Namespace(**{**vars(args), "gemm": "triton"}),
                                                               256))


def test_a_layer_built_with_moe_gemm_tma_binds_the_tma_kernel_and_computes_the_reference():
    """Config.moe_gemm="tma" reaches the layer as Backend.moe_gemm_tma: the layer binds fused_moe_tma
    once, and (interpreted here) its forward is the reference's."""
    from aios.layers.backend import TRITON, Backend
    from aios.layers.fused_moe import FusedMoE

    layer = FusedMoE(4, 32, 16, backend=Backend(TRITON.attention, fused_kernels=True, moe_gemm_tma=True))
    default = FusedMoE(4, 32, 16, backend=TRITON)
    assert layer.fused_moe.func is fused_moe_tma and default.fused_moe.func is fused_moe
    x, w13, w2, topk_weights, topk_ids = random_moe(20, 4, 2, 32, 16, device="cpu")
    with torch.no_grad():
        layer.gate_up_proj.copy_(w13)
        layer.down_proj.copy_(w2)
    got = layer(x, topk_weights, topk_ids)
    assert torch.allclose(got, fused_moe_ref(x, w13, w2, topk_weights, topk_ids), atol=1e-5, rtol=1e-5)
