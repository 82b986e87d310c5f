"""Causal attention for a variable-length batch of query spans over the paged KV cache.

Sequence s of the batch contributes `seqlen_q = cu_seqlens_q[s+1] - cu_seqlens_q[s]` query tokens,
and they are the LAST seqlen_q of its `seqlen_k = cu_seqlens_k[s+1] - cu_seqlens_k[s]` tokens
(the first seqlen_k - seqlen_q were cached by earlier steps: prefix-cache hits, earlier chunks of
a chunked prefill, or the whole context of a decode mixed into a prefill step).

Invariants (tests/test_kernels.py and tests/test_prefill_gqa_packing.py check each, packed and not):
- Every key and value is read from the paged cache through block_tables: the token at position p
  of sequence s lives at `k_cache[block_tables[s, p // block_size], p % block_size]`. The new
  tokens' K/V must already be stored there (store_kvcache runs first).
- Causal: query i of sequence s sits at position `seqlen_k - seqlen_q + i` and attends keys
  0..that position, never later ones.
- Sliding window (`sliding_window=W`, HF's Mistral/Gemma 3 mask): the query at position p attends
  keys j with p - W < j <= p, its last W tokens itself included; None attends the whole prefix.
- GQA: query head h reads kv head `h // (num_heads // num_kv_heads)`; K/V are never repeated.
- Softmax runs in fp32; the output has q's dtype and shape `[total_q, num_heads, head_dim]`.

The Triton kernel is FlashAttention-2 style: one program owns a [BLOCK_M, HEAD_DIM] tile of query
rows of one sequence, streams the keys in BLOCK_N tiles with an online softmax (exp2, log2(e)
folded into the scale), runs the tiles left of the diagonal without a mask, and never visits tiles
right of it. Under a sliding window it also skips the tiles wholly left of every row's window, and
masks the tiles that cross the window's left edge.

The tile rows are BLOCK_Q = BLOCK_M // PACK query positions of PACK heads:
- unpacked (PACK = 1, the default): BLOCK_M positions of one q head; the GROUP q heads of a kv
  head are GROUP programs, and each loads the same K/V tiles (L2 may serve the repeats).
- GQA packing (`pack_gqa=True`: PACK = GROUP rounded up to a power of two, FA3's PackGQA): every q
  head of one kv head, row r holding head r % PACK at position r // PACK (rows of heads past GROUP
  are padding: loaded as 0, never stored). Each K/V tile is loaded once per group, and short spans
  fill the MMA's rows with heads instead of padding. On the H200 at a 16k-token prompt it was no
  faster (411 vs 409 TFLOP/s at 128 x 128 tiles: the loop is bound by its matmuls, not by K/V
  loads), so it is off; `benchmarks/bench_kernels.py --sweep prefill` times both (kernels/NOTES.md).

Static q-tile schedule (`q_tiles`, optional): a CUDA graph replays a fixed launch grid, but the
default grid `(heads, num_seqs, cdiv(max_seqlen_q, BLOCK_Q))` is made of the step's host values.
To capture mixed steps (a few prefill chunks and decode rows) the caller instead passes an int32
device table `q_tiles [num_tiles, 2]`, row t = (seq, m_block) for program t of axis 1, built on the
host each step by `prefill_q_tiles` (q_tiles.py) and copied into a buffer of `max_q_tiles` rows fixed at capture;
the grid is `(heads, num_tiles)`. Invariants (tests/test_prefill_q_tiles.py checks each):
- Every (seq, m_block) holding a query position appears exactly once; a 0-token sequence (past the
  real batch, cu_seqlens padded with its last value) has none.
- Padding rows have seq = -1 and exit at once; so do rows whose m_block holds no query position.
- The result equals the untiled launch's, whatever the rows' order; m_block counts tiles of
  `prefill_tile_rows(...)` positions, the BLOCK_Q of the config picked at the same max_seqlen_q.
"""

import torch
import triton
import triton.language as tl

from aios.kernels.device import is_hopper

LOG2E = 1.4426950408889634
LONG_PROMPT = 4096          # query tokens of a step from which Hopper takes the large prefill tiles


def _gather_paged(cache: torch.Tensor, block_table: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Tokens 0..num_tokens-1 of one sequence, gathered from the paged cache."""
    block_size = cache.shape[1]
    positions = torch.arange(num_tokens, device=cache.device)
    blocks = block_table.long()[positions // block_size]
    return cache[blocks, positions % block_size]  # [num_tokens, num_kv_heads, head_dim]


def prefill_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_tables: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    q_tiles: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain-torch spec: loop over sequences, gather K/V through the block table, fp32 softmax.

    q_tiles (the Triton launch's static schedule) is accepted and ignored: it only assigns the
    work to programs, so the result is the same with or without it."""
    total_q, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.empty(total_q, num_heads, head_dim, dtype=q.dtype, device=q.device)
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for s in range(len(cu_q) - 1):
        seqlen_q, seqlen_k = cu_q[s + 1] - cu_q[s], cu_k[s + 1] - cu_k[s]
        if seqlen_q == 0:
            continue
        k = _gather_paged(k_cache, block_tables[s], seqlen_k).float()
        v = _gather_paged(v_cache, block_tables[s], seqlen_k).float()
        qs = q[cu_q[s]:cu_q[s + 1]].float().reshape(seqlen_q, num_kv_heads, group, head_dim)
        scores = torch.einsum("qhgd,khd->hgqk", qs, k) * scale  # [kv_heads, group, seqlen_q, seqlen_k]
        q_pos = torch.arange(seqlen_k - seqlen_q, seqlen_k, device=q.device)
        k_pos = torch.arange(seqlen_k, device=q.device)
        hidden = k_pos[None, :] > q_pos[:, None]
        if sliding_window is not None:
            hidden |= k_pos[None, :] <= q_pos[:, None] - sliding_window
        scores = scores.masked_fill(hidden, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        o = torch.einsum("hgqk,khd->qhgd", probs, v)
        out[cu_q[s]:cu_q[s + 1]] = o.reshape(seqlen_q, num_heads, head_dim).to(q.dtype)
    return out


@triton.jit
def _paged_token_offsets(
    block_table_row, start_n, mask_n, stride_block, stride_slot,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, TILE_IN_BLOCK: tl.constexpr,
):
    """Element offsets in the cache of tokens start_n .. start_n + BLOCK_N - 1 of one sequence."""
    if TILE_IN_BLOCK:
        # The whole tile sits inside one block (block_size % BLOCK_N == 0, start_n % BLOCK_N == 0).
        block = tl.load(block_table_row + start_n // BLOCK_SIZE).to(tl.int64)
        in_block = (start_n % BLOCK_SIZE) + tl.arange(0, BLOCK_N)
        return block * stride_block + in_block * stride_slot
    else:
        # Any block size: look up each token's block.
        pos = start_n + tl.arange(0, BLOCK_N)
        block = tl.load(block_table_row + pos // BLOCK_SIZE, mask=mask_n, other=0).to(tl.int64)
        return block * stride_block + (pos % BLOCK_SIZE) * stride_slot


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # UPCAST: Triton's CPU interpreter multiplies bf16 tiles as raw uint16; fp32 there is exact.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _prefill_tile(
    acc, l_i, m_i, q, q_pos, k_head_ptr, v_head_ptr, block_table_row, start_n, seqlen_k,
    qk_scale, window, stride_block, stride_slot,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    TILE_IN_BLOCK: tl.constexpr, MASKED: tl.constexpr, SLIDING: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_n = offs_n < seqlen_k
    tok = _paged_token_offsets(block_table_row, start_n, mask_n, stride_block, stride_slot,
                               BLOCK_SIZE, BLOCK_N, TILE_IN_BLOCK)
    k_ptrs = k_head_ptr + tok[None, :] + offs_d[:, None]  # K^T tile [HEAD_DIM, BLOCK_N]
    v_ptrs = v_head_ptr + tok[:, None] + offs_d[None, :]  # V tile   [BLOCK_N, HEAD_DIM]
    if MASKED:
        k = tl.load(k_ptrs, mask=mask_n[None, :], other=0.0)
    else:
        k = tl.load(k_ptrs)
    qk = _dot(q, k, PRECISION, UPCAST) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
    if MASKED:
        visible = (offs_n[None, :] <= q_pos[:, None]) & mask_n[None, :]
        if SLIDING:
            visible = visible & (offs_n[None, :] > q_pos[:, None] - window)
        qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    if SLIDING:
        # A row may see no key yet (m_new = -inf): subtract 0 there, so p and alpha are 0, not NaN.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(qk - m_sub[:, None])
        alpha = tl.exp2(m_i - m_sub)
    else:
        # Every row sees key 0 in its first tile, so m_new is finite and exp2 never sees inf - inf.
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if MASKED:
        v = tl.load(v_ptrs, mask=mask_n[:, None], other=0.0)
    else:
        v = tl.load(v_ptrs)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
    return acc, l_i, m_new


# The block-table width changes from step to step: specializing on it (Triton compiles a variant
# per value class: == 1, divisible by 16, other) would recompile mid-run, inside a request's TTFT.
@triton.jit(do_not_specialize=["stride_bt"])
def _prefill_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr, block_tables_ptr, q_tiles_ptr, qk_scale, window,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_block, stride_slot, stride_kv_head, stride_bt,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_IN_BLOCK: tl.constexpr,
    SLIDING: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, PACK: tl.constexpr,
    TILED: tl.constexpr,
):
    # Heads vary fastest: axis 0 is the q head (PACK == 1; neighbouring programs share a kv head, so
    # its K/V tiles hit in L2) or the kv head (PACK > 1: the program holds all its q heads).
    # Untiled, axis 1 is the sequence and the query-tile index (axis 2) varies slowest and counts
    # down, so the heaviest causal tiles (the last rows of every sequence and head) launch in the
    # first wave and the light ones fill the tail. TILED, axis 1 is row t of q_tiles, (seq, m_block):
    # its order is the launch order (prefill_q_tiles puts the heaviest first); seq < 0 is padding.
    BLOCK_Q: tl.constexpr = BLOCK_M // PACK
    head = tl.program_id(0)
    if TILED:
        tile = tl.program_id(1)
        seq = tl.load(q_tiles_ptr + 2 * tile)
        if seq < 0:
            return
        m_block = tl.load(q_tiles_ptr + 2 * tile + 1)
    else:
        seq = tl.program_id(1)
        m_block = tl.num_programs(2) - 1 - tl.program_id(2)
    q_start = tl.load(cu_seqlens_q_ptr + seq)
    seqlen_q = tl.load(cu_seqlens_q_ptr + seq + 1) - q_start
    if m_block * BLOCK_Q >= seqlen_q:
        return
    seqlen_k = tl.load(cu_seqlens_k_ptr + seq + 1) - tl.load(cu_seqlens_k_ptr + seq)
    num_cached_tokens = seqlen_k - seqlen_q

    offs_d = tl.arange(0, HEAD_DIM)
    if PACK == 1:
        offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < seqlen_q
        q_rows = (q_start + offs_m).to(tl.int64)
        q_offs = q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :]
        kv_head = head // GROUP
    else:
        kv_head = head
        offs_m = m_block * BLOCK_Q + tl.arange(0, BLOCK_M) // PACK      # each row's query position
        group_head = tl.arange(0, BLOCK_M) % PACK
        mask_m = (offs_m < seqlen_q) & (group_head < GROUP)             # PACK > GROUP: padding rows
        q_rows = (q_start + offs_m).to(tl.int64)
        q_heads = kv_head * GROUP + group_head
        q_offs = q_rows[:, None] * stride_qt + q_heads[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptr + q_offs, mask=mask_m[:, None], other=0.0)  # [BLOCK_M, HEAD_DIM]
    q_pos = num_cached_tokens + offs_m

    k_head_ptr = k_cache_ptr + kv_head * stride_kv_head
    v_head_ptr = v_cache_ptr + kv_head * stride_kv_head
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Keys before this tile's first query position are visible to all its rows: no mask.
    full_end = ((num_cached_tokens + m_block * BLOCK_Q) // BLOCK_N) * BLOCK_N
    if SLIDING:
        # Tiles wholly left of the first row's window are never visited; those crossing the last
        # row's window edge are masked. window_start <= full_start <= full_end.
        q_first = num_cached_tokens + m_block * BLOCK_Q
        window_start = (tl.maximum(q_first - window + 1, 0) // BLOCK_N) * BLOCK_N
        full_start = tl.cdiv(tl.maximum(q_first + BLOCK_Q - 1 - window + 1, 0), BLOCK_N) * BLOCK_N
        full_start = tl.minimum(full_start, full_end)
        for start_n in range(window_start, full_start, BLOCK_N):
            acc, l_i, m_i = _prefill_tile(
                acc, l_i, m_i, q, q_pos, k_head_ptr, v_head_ptr, block_table_row, start_n, seqlen_k,
                qk_scale, window, stride_block, stride_slot, HEAD_DIM, BLOCK_SIZE, BLOCK_N, TILE_IN_BLOCK,
                True, True, PRECISION, UPCAST)
        for start_n in range(full_start, full_end, BLOCK_N):
            acc, l_i, m_i = _prefill_tile(
                acc, l_i, m_i, q, q_pos, k_head_ptr, v_head_ptr, block_table_row, start_n, seqlen_k,
                qk_scale, window, stride_block, stride_slot, HEAD_DIM, BLOCK_SIZE, BLOCK_N, TILE_IN_BLOCK,
                False, False, PRECISION, UPCAST)
    else:
        for start_n in range(0, full_end, BLOCK_N):
            acc, l_i, m_i = _prefill_tile(
                acc, l_i, m_i, q, q_pos, k_head_ptr, v_head_ptr, block_table_row, start_n, seqlen_k,
                qk_scale, window, stride_block, stride_slot, HEAD_DIM, BLOCK_SIZE, BLOCK_N, TILE_IN_BLOCK,
                False, False, PRECISION, UPCAST)
    # Tiles crossing the diagonal; tiles wholly right of it are never visited.
    end = tl.minimum(num_cached_tokens + (m_block + 1) * BLOCK_Q, seqlen_k)
    for start_n in range(full_end, end, BLOCK_N):
        acc, l_i, m_i = _prefill_tile(
            acc, l_i, m_i, q, q_pos, k_head_ptr, v_head_ptr, block_table_row, start_n, seqlen_k,
            qk_scale, window, stride_block, stride_slot, HEAD_DIM, BLOCK_SIZE, BLOCK_N, TILE_IN_BLOCK,
            True, SLIDING, PRECISION, UPCAST)

    if SLIDING:
        acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]   # l_i == 0 only on padding rows (not stored)
    else:
        acc = acc / l_i[:, None]
    # the output offsets are made here, not kept live (a [BLOCK_M, HEAD_DIM] int64 tile) through the loops
    if PACK == 1:
        out_ptrs = out_ptr + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
    else:
        out_ptrs = out_ptr + q_rows[:, None] * stride_ot + q_heads[:, None] * stride_oh + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None])


def _prefill_config(head_dim: int, dtype: torch.dtype, device: torch.device, max_seqlen_q: int,
                    group: int = 1, pack_gqa: bool | None = None) -> dict:
    """Tiles and whether to pack GQA: large tiles for long prompts on the GPU, tiny ones under the
    CPU interpreter. block_m counts tile rows (q heads x positions when packed, as FA3's kBlockM).
    pack_gqa=None picks the default, unpacked: on the H200 at 16k tokens packing gained nothing
    (kernels/NOTES.md); from LONG_PROMPT query tokens Hopper takes 128 x 128 tiles, 8 warps."""
    pack_gqa = False if pack_gqa is None else pack_gqa
    if device.type != "cuda":
        cfg = dict(block_m=16, block_n=16, num_warps=4, num_stages=1)
    elif dtype == torch.float32 or head_dim > 128:
        cfg = dict(block_m=64, block_n=32, num_warps=4, num_stages=2)
    elif max_seqlen_q >= LONG_PROMPT and is_hopper(device):
        # fastest of the 16k-token sweep on the H200 (kernels/NOTES.md): 410 TFLOP/s against 370 at 64 x 64
        cfg = dict(block_m=128, block_n=128, num_warps=8, num_stages=3)
    else:  # fastest of the 8 x 1024-token sweep in benchmarks/bench_kernels.py on H100 (see kernels/NOTES.md)
        cfg = dict(block_m=64, block_n=64, num_warps=4, num_stages=3)
    pack = triton.next_power_of_2(group) if pack_gqa else 1
    if device.type == "cuda" and max_seqlen_q * pack <= 64:
        # decode-heavy chunked-prefill steps: don't pad 1-token spans to 64 rows
        cfg.update(block_m=max(16, triton.next_power_of_2(max_seqlen_q) * pack), num_warps=4)
    cfg.update(block_m=max(cfg["block_m"], pack), pack_gqa=pack_gqa)
    return cfg


def _check_tiles(block_m: int, block_n: int, pack: int) -> None:
    """What the kernel needs of its tiles: powers of two, tl.dot's 16 in every dimension, and at
    least one query position per tile (block_m >= pack)."""
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        assert size >= 16 and size & (size - 1) == 0, f"{name}={size}: needs a power of two >= 16"
    assert block_m >= pack, f"block_m={block_m} rows cannot hold one position of {pack} packed heads"


def _check_q_tiles(q_tiles: torch.Tensor, device: torch.device) -> None:
    """What the kernel reads of a q-tile schedule: int32 rows (seq, m_block), contiguous, beside q."""
    if not isinstance(q_tiles, torch.Tensor):
        raise TypeError(f"q_tiles must be a torch.Tensor of int32 (seq, m_block) rows, not {type(q_tiles).__name__}")
    if q_tiles.dtype != torch.int32:
        raise ValueError(f"q_tiles must be int32 (seq, m_block) rows, not {q_tiles.dtype}")
    if q_tiles.dim() != 2 or q_tiles.shape[1] != 2:
        raise ValueError(f"q_tiles must have shape [num_tiles, 2] (seq, m_block), not {list(q_tiles.shape)}")
    if not q_tiles.is_contiguous():
        raise ValueError("q_tiles must be contiguous: the kernel reads row t at q_tiles_ptr + 2 * t")
    if q_tiles.device != device:
        raise ValueError(f"q_tiles is on {q_tiles.device}, q on {device}: the kernel reads it on q's device")


def _prefill_attention_launch(
    q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, block_tables, scale,
    block_m: int, block_n: int, num_warps: int, num_stages: int, sliding_window: int | None = None,
    pack_gqa: bool = False, q_tiles: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the kernel at the given tiles. Untiled, the grid is (heads, num_seqs,
    cdiv(max_seqlen_q, block_m // pack)); with q_tiles (rows counting tiles of block_m // pack query
    positions) it is (heads, q_tiles.shape[0]) and max_seqlen_q is unread. Heads: kv heads when
    pack_gqa, else q heads. Output rows of no sequence's query are left unwritten."""
    if q_tiles is not None:
        _check_q_tiles(q_tiles, q.device)
    total_q, num_heads, head_dim = q.shape
    num_seqs = cu_seqlens_q.shape[0] - 1
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    assert num_heads % num_kv_heads == 0 and k_cache.shape[3] == head_dim
    assert head_dim >= 16 and head_dim & (head_dim - 1) == 0, "Triton path needs a power-of-two head_dim"
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1 and q.stride(-1) == 1
    group = num_heads // num_kv_heads
    pack = triton.next_power_of_2(group) if pack_gqa else 1
    _check_tiles(block_m, block_n, pack)
    out = torch.empty(total_q, num_heads, head_dim, dtype=q.dtype, device=q.device)
    if total_q == 0 or num_seqs == 0 or (q_tiles is not None and q_tiles.shape[0] == 0):
        return out
    heads = num_kv_heads if pack_gqa else num_heads
    if q_tiles is None:
        grid = (heads, num_seqs, triton.cdiv(max_seqlen_q, block_m // pack))
    else:
        grid = (heads, q_tiles.shape[0])
    _prefill_attention_kernel[grid](
        q, k_cache, v_cache, out, cu_seqlens_q, cu_seqlens_k, block_tables,
        cu_seqlens_q if q_tiles is None else q_tiles,       # unread when not TILED
        scale * LOG2E,
        0 if sliding_window is None else sliding_window,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        BLOCK_M=block_m, BLOCK_N=block_n, TILE_IN_BLOCK=block_size % block_n == 0,
        SLIDING=sliding_window is not None, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST=q.device.type != "cuda", PACK=pack, TILED=q_tiles is not None,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_tables: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    q_tiles: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton version of prefill_attention_ref (same arguments, same result).

    q_tiles: an optional static schedule (module docstring), built with
    `prefill_q_tiles(..., prefill_tile_rows(head_dim, dtype, device, max_seqlen_q, group), ...)` at
    this call's max_seqlen_q (under a CUDA graph: the fixed largest span the tiles were built for),
    so that its m_blocks count the tiles this call's config picks."""
    cfg = _prefill_config(q.shape[2], q.dtype, q.device, max_seqlen_q, group=q.shape[1] // k_cache.shape[2])
    return _prefill_attention_launch(q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, block_tables,
                                     scale, **cfg, sliding_window=sliding_window, q_tiles=q_tiles)
