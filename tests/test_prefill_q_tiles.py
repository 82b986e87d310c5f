"""The prefill kernel's static q-tile schedule: a launch grid of (heads, num_tiles) fixed at CUDA-graph
capture, program t computing row t = (seq, m_block) of a device table (prefill_attention.py's
module docstring). It must equal prefill_attention_ref, the spec, and the untiled launch, on mixed
steps (chunks after a cached prefix, decode rows, GQA packed and not, a sliding window, cu_seqlens
padded with 0-token sequences, tables padded with (-1, 0) rows, in any order); compute exactly the
tiles its table lists; and prefill_q_tiles must list each tile of a query position once, heaviest
first, within max_q_tiles rows.
"""

import os

import numpy as np
import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from test_kernels import assert_attention_close, make_prefill_batch  # noqa: E402

from aios.kernels.prefill_attention import (  # noqa: E402
    _prefill_attention_launch,
    _prefill_config,
    prefill_attention,
    prefill_attention_ref,
)
from aios.kernels.q_tiles import max_q_tiles, prefill_q_tiles, prefill_tile_rows  # noqa: E402

# a mixed step: decode rows (1 query), chunks after a cached prefix (5 of 40, 33 of 70), whole
# prompts (17 crosses a 16-row tile), and a chunk of 16 exactly filling one tile
MIXED_SPANS = [(1, 1), (17, 17), (5, 40), (1, 33), (33, 70), (1, 20), (16, 30)]
NUM_PADDING_SEQS = 2     # 0-token sequences past the real batch: cu_seqlens repeat their last value
NUM_PADDING_TILES = 3


def padded_mixed_step(num_heads, num_kv_heads, head_dim=32, block_size=16, spans=MIXED_SPANS):
    """prefill_attention's arguments for spans, with NUM_PADDING_SEQS 0-token sequences appended
    (cu_seqlens repeated, block-table rows of -1) as a captured graph's fixed batch would hold."""
    args, _, _ = make_prefill_batch(spans, block_size, num_heads, num_kv_heads, head_dim, torch.float32)
    q, k_cache, v_cache, cu_q, cu_k, max_q, max_k, block_tables, scale = args
    cu_q = torch.cat([cu_q, cu_q[-1:].repeat(NUM_PADDING_SEQS)])
    cu_k = torch.cat([cu_k, cu_k[-1:].repeat(NUM_PADDING_SEQS)])
    pad_rows = torch.full((NUM_PADDING_SEQS, block_tables.shape[1]), -1, dtype=block_tables.dtype,
                          device=block_tables.device)
    block_tables = torch.cat([block_tables, pad_rows])
    return (q, k_cache, v_cache, cu_q, cu_k, max_q, max_k, block_tables, scale)


def seqlens(args):
    cu_q, cu_k = args[3].cpu().numpy(), args[4].cpu().numpy()
    return np.diff(cu_q), np.diff(cu_k)


def tiles_for(args, tile_rows, num_padding=NUM_PADDING_TILES, shuffle_seed=None):
    """The schedule of args' step with num_padding (-1, 0) rows; shuffled (padding rows included) if asked."""
    seqlens_q, seqlens_k = seqlens(args)
    num_real = int(((seqlens_q + tile_rows - 1) // tile_rows).sum())
    table = prefill_q_tiles(seqlens_q, seqlens_k, tile_rows, num_real + num_padding)
    if shuffle_seed is not None:
        table = table[np.random.default_rng(shuffle_seed).permutation(len(table))]
    return torch.from_numpy(np.ascontiguousarray(table)).to(args[0].device)


def launch(args, pack_gqa=False, sliding_window=None, q_tiles=None, block_m=16, block_n=16):
    q, k_cache, v_cache, cu_q, cu_k, max_q, _, block_tables, scale = args
    return _prefill_attention_launch(q, k_cache, v_cache, cu_q, cu_k, max_q, block_tables, scale, block_m=block_m,
                                     block_n=block_n, num_warps=4, num_stages=1, sliding_window=sliding_window,
                                     pack_gqa=pack_gqa, q_tiles=q_tiles)


def tile_rows_of(args, pack_gqa, block_m=16):
    group = args[0].shape[1] // args[1].shape[2]
    return block_m // (1 << (group - 1).bit_length()) if pack_gqa else block_m


# ---------------------------------------------------------------------------------------------
# the tiled launch


@pytest.mark.parametrize("sliding_window", [None, 7])
@pytest.mark.parametrize("pack_gqa", [False, True])
def test_tiled_prefill_of_a_padded_mixed_step_equals_the_ref(pack_gqa, sliding_window):
    """4 q heads over 2 kv heads; the table shuffled, padding rows among the real ones."""
    args = padded_mixed_step(4, 2)
    q_tiles = tiles_for(args, tile_rows_of(args, pack_gqa), shuffle_seed=0)
    out = launch(args, pack_gqa, sliding_window, q_tiles)
    assert_attention_close(out, prefill_attention_ref(*args, sliding_window=sliding_window), torch.float32)


@pytest.mark.parametrize("pack_gqa", [False, True])
def test_tiled_prefill_equals_the_untiled_launch_whatever_the_tile_order(pack_gqa):
    """The schedule only assigns the same programs to other grid slots: results are bit-identical."""
    args = padded_mixed_step(4, 2)
    untiled = launch(args, pack_gqa)
    tile_rows = tile_rows_of(args, pack_gqa)
    for shuffle_seed in (None, 1, 2):
        tiled = launch(args, pack_gqa, q_tiles=tiles_for(args, tile_rows, shuffle_seed=shuffle_seed))
        torch.testing.assert_close(tiled, untiled, atol=0, rtol=0)


def test_the_wrapper_with_tiles_of_prefill_tile_rows_equals_the_ref_and_the_ref_ignores_tiles():
    """prefill_attention(q_tiles=...) picks the same config as without: tiles built with
    prefill_tile_rows at the call's max_seqlen_q line up with the kernel's."""
    args = padded_mixed_step(4, 2)
    q, k_cache, max_q = args[0], args[1], args[5]
    tile_rows = prefill_tile_rows(q.shape[2], q.dtype, q.device, max_q, q.shape[1] // k_cache.shape[2])
    q_tiles = tiles_for(args, tile_rows)
    ref = prefill_attention_ref(*args)
    assert_attention_close(prefill_attention(*args, q_tiles=q_tiles), ref, torch.float32)
    torch.testing.assert_close(prefill_attention_ref(*args, q_tiles=q_tiles), ref, atol=0, rtol=0)


@pytest.fixture
def nan_outputs(monkeypatch):
    """torch.empty gives NaN-filled float tensors: output rows the kernel leaves unwritten stay NaN."""
    empty = torch.empty

    def nan_empty(*size, **kwargs):
        out = empty(*size, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out
    monkeypatch.setattr(torch, "empty", nan_empty)       # the launch allocates its output with it


@pytest.mark.parametrize("pack_gqa", [False, True])
def test_the_tiled_kernel_computes_exactly_the_tiles_its_table_lists(pack_gqa, nan_outputs):
    """A table of only sequence 4's tiles (and padding rows): its rows equal the ref, every other
    output row is left as allocated (NaN), so no tile outside the table runs."""
    args = padded_mixed_step(4, 2)
    table = tiles_for(args, tile_rows_of(args, pack_gqa))
    only_seq_4 = torch.cat([table[table[:, 0] == 4], table[table[:, 0] == -1]]).contiguous()
    assert len(only_seq_4) > NUM_PADDING_TILES + 1          # seq 4 (33 of 70) spans several tiles
    out = launch(args, pack_gqa, q_tiles=only_seq_4)
    start, end = args[3][4].item(), args[3][5].item()
    assert_attention_close(out[start:end], prefill_attention_ref(*args)[start:end], torch.float32)
    assert out[:start].isnan().all() and out[end:].isnan().all()


@pytest.mark.parametrize("pack_gqa", [False, True])
def test_padding_rows_exit_before_reading_the_step(pack_gqa, nan_outputs):
    """A row (-1, 0) that read on would take sequence -1 from the int32 before cu_seqlens and
    block_tables. Here that memory holds a real 16-token sequence (the step's tensors are views
    from its second entry on), so such a program would write q rows 0..15: they must stay NaN."""
    args = padded_mixed_step(4, 2, spans=[(16, 16)] + MIXED_SPANS)
    q, k_cache, v_cache, cu_q, cu_k, max_q, max_k, block_tables, scale = args
    step = (q, k_cache, v_cache, cu_q[1:], cu_k[1:], max_q, max_k, block_tables[1:], scale)
    out = launch(step, pack_gqa, q_tiles=tiles_for(step, tile_rows_of(step, pack_gqa), shuffle_seed=3))
    assert out[:16].isnan().all(), "a padding row computed the sequence before the table's first"
    assert_attention_close(out[16:], prefill_attention_ref(*args)[16:], torch.float32)


def test_a_table_of_only_padding_rows_launches_programs_that_all_exit():
    args = padded_mixed_step(4, 2)
    padding = torch.tensor([[-1, 0]] * 4, dtype=torch.int32, device=args[0].device)
    launch(args, q_tiles=padding)                           # reads nothing of the step: must not fail
    launch(args, q_tiles=padding[:0])                       # an empty table launches nothing


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(4, 2, dtype=torch.int64), "int32"),
    (torch.zeros(4, 3, dtype=torch.int32), r"shape \[num_tiles, 2\]"),
    (torch.zeros(8, dtype=torch.int32), r"shape \[num_tiles, 2\]"),
    (torch.zeros(2, 4, dtype=torch.int32).t(), "contiguous"),
    (torch.zeros(4, 2, dtype=torch.int32, device="meta"), "device|on meta"),
])
def test_a_malformed_q_tiles_table_is_refused_with_a_clear_error(bad, match):
    args = padded_mixed_step(4, 2, spans=[(3, 5)])
    if bad.device.type != "meta":
        bad = bad.to(args[0].device)
    with pytest.raises(ValueError, match=match):
        launch(args, q_tiles=bad)
    with pytest.raises(ValueError, match=match):
        prefill_attention(*args, q_tiles=bad)


def test_a_q_tiles_table_that_is_not_a_tensor_is_refused():
    args = padded_mixed_step(4, 2, spans=[(3, 5)])
    with pytest.raises(TypeError, match="torch.Tensor"):
        launch(args, q_tiles=np.zeros((4, 2), dtype=np.int32))


# ---------------------------------------------------------------------------------------------
# the host side: prefill_q_tiles, max_q_tiles, prefill_tile_rows


def tile_work(seqlens_q, seqlens_k, table, tile_rows):
    """Keys each real row of table visits: min(cached + (m + 1) * tile_rows, seqlen_k)."""
    seq, m_block = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    cached = seqlens_k[seq] - seqlens_q[seq]
    return np.minimum(cached + (m_block + 1) * tile_rows, seqlens_k[seq])


def test_prefill_q_tiles_of_a_small_step_is_this_table():
    # seq 0: 20 new after 10 cached -> tiles m=0 (keys 26), m=1 (keys 30); seq 1: 0 tokens;
    # seq 2: 1 decode row over 40 keys; seq 3: 16 new, no cache -> one tile of 16 keys
    table = prefill_q_tiles(np.array([20, 0, 1, 16]), np.array([30, 7, 40, 16]), 16, 6)
    assert table.dtype == np.int32 and table.shape == (6, 2)
    assert table.tolist() == [[2, 0], [0, 1], [0, 0], [3, 0], [-1, 0], [-1, 0]]


def test_prefill_q_tiles_covers_each_tile_once_heaviest_first_within_max_q_tiles():
    rng = np.random.default_rng(1234)
    for _ in range(200):
        num_seqs = int(rng.integers(1, 40))
        tile_rows = int(rng.choice([1, 4, 8, 16, 64]))
        seqlens_q = rng.integers(0, 3 * tile_rows, num_seqs) * rng.integers(0, 2, num_seqs)  # ~half 0-token
        seqlens_q[rng.random(num_seqs) < 0.3] = 1                                            # decode rows
        seqlens_k = seqlens_q + rng.integers(0, 200, num_seqs)
        bound = max_q_tiles(int(seqlens_q.sum()), num_seqs, tile_rows)
        extra = int(rng.integers(0, 5))
        table = prefill_q_tiles(seqlens_q, seqlens_k, tile_rows, bound + extra)
        assert table.shape == (bound + extra, 2) and table.dtype == np.int32
        real = table[table[:, 0] >= 0]
        assert (table[len(real):] == (-1, 0)).all(), "padding rows come after every real row"
        expected = {(s, m) for s in range(num_seqs) for m in range(-(-int(seqlens_q[s]) // tile_rows))}
        assert len(real) == len(expected) and set(map(tuple, real.tolist())) == expected
        assert not set(real[:, 0].tolist()) & set(np.flatnonzero(seqlens_q == 0).tolist())
        assert (np.diff(tile_work(seqlens_q, seqlens_k, real, tile_rows)) <= 0).all(), "heaviest first"
        assert len(real) <= -(-int(seqlens_q.sum()) // tile_rows) + num_seqs


def test_prefill_q_tiles_refuses_a_step_with_more_tiles_than_the_table_holds():
    with pytest.raises(ValueError, match="needs 3 q tiles"):
        prefill_q_tiles(np.array([17, 1]), np.array([17, 9]), 16, 2)
    with pytest.raises(ValueError, match="seqlens_q <= seqlens_k"):
        prefill_q_tiles(np.array([5]), np.array([4]), 16, 2)


def test_max_q_tiles_is_reached_by_decode_rows_and_one_chunk():
    """num_seqs - 1 one-token rows and one chunk of the rest: every sequence adds a partial tile."""
    for num_tokens, num_seqs, tile_rows in ((10, 3, 4), (300, 40, 16), (64, 1, 16), (5, 8, 16)):
        num_rows = min(num_seqs, num_tokens)
        seqlens_q = np.array([1] * (num_rows - 1) + [num_tokens - num_rows + 1])
        bound = max_q_tiles(num_tokens, num_seqs, tile_rows)
        prefill_q_tiles(seqlens_q, seqlens_q, tile_rows, bound)                  # fits
        with pytest.raises(ValueError):
            prefill_q_tiles(seqlens_q, seqlens_q, tile_rows, bound - 1)          # and needs every row
    assert max_q_tiles(0, 4, 16) == 0
    assert max_q_tiles(32, 0, 16) == 0           # no sequence holds a token (lesson 11's brute force)


@pytest.mark.parametrize("group", [1, 2, 3, 4])
def test_prefill_tile_rows_on_the_cpu_is_the_interpreter_configs_block_m_over_pack(group):
    cpu = torch.device("cpu")
    assert prefill_tile_rows(32, torch.float32, cpu, 70, group) == 16
    pack = 1 << (group - 1).bit_length()
    cfg = _prefill_config(32, torch.float32, cpu, 70, group=group, pack_gqa=True)
    assert prefill_tile_rows(32, torch.float32, cpu, 70, group, pack_gqa=True) == cfg["block_m"] // pack == 16 // pack
