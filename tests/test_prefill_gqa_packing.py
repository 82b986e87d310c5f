"""GQA packing in the prefill kernel: one program's BLOCK_M tile rows hold every q head of one kv
head (row r: head r % PACK of the group, position r // PACK), so each K/V tile is loaded once per
group. Packed and unpacked must both equal prefill_attention_ref, the spec, over GQA groups 1/2/4
(and 3, padded to 4), sliding windows, chunks after a cached prefix, and ragged lengths; and every
tile config the wrapper or the benchmark sweep picks must be one the kernel takes.
"""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from test_kernels import assert_attention_close, make_prefill_batch  # noqa: E402

from aios.kernels.prefill_attention import (  # noqa: E402
    _check_tiles,
    _prefill_attention_launch,
    _prefill_config,
    prefill_attention_ref,
)

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# ragged: one-token spans, a span crossing 16-row tiles, chunks after a cached prefix (5 of 40, 1 of 33)
RAGGED_SPANS = [(1, 1), (17, 17), (5, 40), (1, 33), (33, 70)]


def launch(args, pack_gqa, block_m=16, block_n=16, sliding_window=None, num_warps=4, num_stages=1):
    q, k_cache, v_cache, cu_q, cu_k, max_q, _, block_tables, scale = args
    return _prefill_attention_launch(q, k_cache, v_cache, cu_q, cu_k, max_q, block_tables, scale, block_m=block_m,
                                     block_n=block_n, num_warps=num_warps, num_stages=num_stages,
                                     sliding_window=sliding_window, pack_gqa=pack_gqa)


@pytest.mark.parametrize("pack_gqa", [False, True])
@pytest.mark.parametrize("num_heads, num_kv_heads", [(4, 4), (4, 2), (8, 2)])
def test_packed_and_unpacked_prefill_equal_the_ref_for_gqa_groups_1_2_4(pack_gqa, num_heads, num_kv_heads):
    args, _, _ = make_prefill_batch(RAGGED_SPANS, 16, num_heads, num_kv_heads, 32, torch.float32)
    assert_attention_close(launch(args, pack_gqa), prefill_attention_ref(*args), torch.float32)


def test_packing_a_group_that_is_not_a_power_of_two_masks_the_padding_heads():
    """6 q heads over 2 kv heads: groups of 3 packed as 4, the 4th row of every position is padding."""
    args, _, _ = make_prefill_batch(RAGGED_SPANS, 16, 6, 2, 32, torch.float32)
    assert_attention_close(launch(args, True), prefill_attention_ref(*args), torch.float32)


@pytest.mark.parametrize("window, num_heads", [(7, 4), (20, 8)])
def test_packed_prefill_with_a_sliding_window_equals_the_ref(window, num_heads):
    # 16 rows of 4 heads hold 4 positions: windows edges land inside, at and across tiles
    args, _, _ = make_prefill_batch(RAGGED_SPANS + [(16, 48), (20, 21)], 8, num_heads, 2, 32, torch.float32)
    assert_attention_close(launch(args, True, sliding_window=window),
                           prefill_attention_ref(*args, sliding_window=window), torch.float32)


def test_packed_bf16_tiles_wider_than_a_block_equal_the_ref():
    """bf16, 32-row tiles of 2 heads x 16 positions, 32-key tiles over 8-token blocks (per-token lookups)."""
    args, _, _ = make_prefill_batch([(40, 40), (1, 64), (16, 65)], 8, 4, 2, 64, torch.bfloat16)
    assert_attention_close(launch(args, True, block_m=32, block_n=32), prefill_attention_ref(*args), torch.bfloat16)


def test_packed_chunked_prefill_equals_one_prefill():
    """Chunks of 13 queries over a 70-token prompt (GQA 4): each chunk's rows equal the whole prompt's."""
    args, _, _ = make_prefill_batch([(70, 70)], 16, 8, 2, 32, torch.float32)
    q, k_cache, v_cache, _, _, _, _, block_tables, scale = args
    whole = prefill_attention_ref(*args)
    for start in range(0, 70, 26):
        end = min(start + 13, 70)
        cu_q = torch.tensor([0, end - start], dtype=torch.int32, device=q.device)
        cu_k = torch.tensor([0, end], dtype=torch.int32, device=q.device)
        chunk = (q[start:end], k_cache, v_cache, cu_q, cu_k, end - start, end, block_tables, scale)
        assert_attention_close(launch(chunk, True), whole[start:end], torch.float32)


@pytest.mark.parametrize("group", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("pack_gqa", [False, True])
def test_every_gpu_prefill_config_is_one_the_kernel_takes(group, pack_gqa, monkeypatch):
    """_prefill_config on the GPU (an H200: Hopper's large tiles from 4,096 query tokens), at every
    chunk length class, gives tiles _check_tiles accepts."""
    monkeypatch.setattr("aios.kernels.device._cuda_capability", lambda index: (9, 0))
    pack = 1 << (group - 1).bit_length() if pack_gqa else 1
    for dtype, head_dim in ((torch.bfloat16, 128), (torch.float32, 128), (torch.bfloat16, 256)):
        for max_seqlen_q in (1, 2, 16, 17, 64, 65, 1024, 16384):
            cfg = _prefill_config(head_dim, dtype, torch.device("cuda", 0), max_seqlen_q, group=group,
                                  pack_gqa=pack_gqa)
            assert cfg["pack_gqa"] is pack_gqa
            _check_tiles(cfg["block_m"], cfg["block_n"], pack)
            if max_seqlen_q * pack <= 64:   # a short chunk is not padded past its next power of two
                assert cfg["block_m"] <= max(16, pack * (1 << (max_seqlen_q - 1).bit_length()))


def test_the_default_prefill_config_is_unpacked_until_measured(monkeypatch):
    monkeypatch.setattr("aios.kernels.device._cuda_capability", lambda index: (9, 0))
    assert _prefill_config(128, torch.bfloat16, torch.device("cuda", 0), 16384, group=2)["pack_gqa"] is False


def test_a_tile_without_room_for_one_packed_position_is_refused():
    with pytest.raises(AssertionError, match="packed heads"):
        _check_tiles(16, 64, 32)
    with pytest.raises(AssertionError, match="power of two"):
        _check_tiles(48, 64, 1)


def test_every_benchmark_sweep_config_fits_the_kernel_at_block_size_256():
    """bench_kernels.py's PREFILL_SWEEP, packed for the 0.6B's group of 2 and the 8B's of 4, and
    unpacked: each is a tile the kernel takes, and its key tiles sit inside one 256-token block."""
    from benchmarks.kernel_bench.prefill import PREFILL_SWEEP

    for block_m, block_n, num_warps, num_stages in PREFILL_SWEEP:
        for pack in (1, 2, 4):
            _check_tiles(block_m, block_n, pack)
        assert 256 % block_n == 0, (block_m, block_n)   # TILE_IN_BLOCK: one block id per key tile
        assert num_warps in (4, 8) and 1 <= num_stages <= 4


def test_bench_prefill_cases_parse_chunks_after_a_cached_prefix():
    from benchmarks.kernel_bench.prefill import parse_heads, parse_prefill_cases

    assert parse_prefill_cases("8x1024,1x8192+8192") == [(8, 1024, 0), (1, 8192, 8192)]
    assert parse_heads("16/8,32/8") == [(16, 8), (32, 8)]


# ---------------------------------------------------------------------------------------------
# GPU: the engine's long-prompt shapes (Qwen3-0.6B 16/8 heads, 8B 32/8), the tiles the engine takes
# (_prefill_config on Hopper: below LONG_PROMPT query tokens and from it); each is a compile per
# case, so the other sweep tiles are left to bench_kernels.py, which records each timed output's error


GPU_TILES = [(64, 64, 4, 3), (128, 128, 8, 3)]


@gpu
@needs_cuda
@pytest.mark.parametrize("num_heads", [16, 32])
@pytest.mark.parametrize("block_size", [16, 256])
@pytest.mark.parametrize("tiles", GPU_TILES)
@pytest.mark.parametrize("pack_gqa", [False, True])
def test_packed_and_unpacked_prefill_equal_the_ref_at_real_sizes(num_heads, block_size, tiles, pack_gqa):
    # ragged spans; a chunk after a cached prefix crossing blocks; a 1-token chunk after 3,000 tokens
    spans = [(1024, 1024), (300, 1500), (1, 700), (129, 129), (1000, 4000), (1, 3001)]
    args, _, _ = make_prefill_batch(spans, block_size, num_heads, 8, 128, torch.bfloat16)
    block_m, block_n, num_warps, num_stages = tiles
    for window in (None, 512):
        out = launch(args, pack_gqa, block_m, block_n, window, num_warps, num_stages)
        assert_attention_close(out, prefill_attention_ref(*args, sliding_window=window), torch.bfloat16)


@gpu
@needs_cuda
@pytest.mark.parametrize("pack_gqa", [False, True])
def test_a_long_chunk_after_a_long_cached_prefix_equals_the_ref(pack_gqa):
    """A 2,048-token chunk at the end of an 8,192-token context (block 256), as chunked prefill
    runs a long prompt; the default tiles for that length."""
    args, _, _ = make_prefill_batch([(2048, 8192)], 256, 32, 8, 128, torch.bfloat16)
    cfg = _prefill_config(128, torch.bfloat16, args[0].device, 2048, group=4, pack_gqa=pack_gqa)
    out = launch(args, cfg["pack_gqa"], cfg["block_m"], cfg["block_n"], None, cfg["num_warps"], cfg["num_stages"])
    assert_attention_close(out, prefill_attention_ref(*args), torch.bfloat16)
