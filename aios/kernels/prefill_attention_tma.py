"""Hopper variant of the paged prefill attention: Q/K/V tiles by TMA, optionally warp-specialized.

Same arguments, semantics and spec as `prefill_attention` (prefill_attention.py: causal, varlen,
paged, GQA, sliding window; the spec is `prefill_attention_ref`). Opt-in: the engine runs it only
with `Config.attention_backend="triton-tma"` (aios/layers/backend.py, which checks
`check_prefill_attention_tma` at start-up), and where it cannot apply it raises ValueError (no
silent fallback, so a benchmark row or a test is always the kernel it names). It applies to bf16/fp16, head_dim 64
or 128, a block size that is a multiple of BLOCK_N, on an sm_90 GPU (or Triton's CPU interpreter).

Why TMA fits the paged cache: with BLOCK_N dividing the block size, key tile start_n of a sequence
lies inside one KV block. A descriptor over `k_cache` as [num_blocks, block_size, num_kv_heads *
head_dim] with box [1, BLOCK_N, HEAD_DIM], loaded at (block_table[start_n // block_size],
start_n % block_size, kv_head * head_dim), is one TMA copy of the tile. Q is read the same way from
`[total_q, num_heads * head_dim]`, box [BLOCK_M, HEAD_DIM] at the tile's first row: rows past the
span are the next sequence's queries (or zeros past total_q, TMA's padding), computed and never
stored. The output is stored with a row mask, not by TMA, which would overwrite the next
sequence's rows.

Invariants beyond prefill_attention's:
- No slot past seqlen_k is read (a free slot of the engine's torch.empty cache may hold NaN, and
  a TMA box cannot be masked by row): a last tile short of keys is loaded shifted left by the keys
  it lacks, so its box ends at key seqlen_k - 1. Its leading rows are keys of earlier tiles, or
  TMA's zeros where the shifted slot is negative (before the block's first); the mask hides both
  (key position >= start_n), and both are finite, so their p = 0 adds 0.
- Descriptors are host-side (`triton.tools.tensor_descriptor.TensorDescriptor`, passed by value as
  kernel parameters): no global-memory allocator is needed, so `triton.set_allocator` (process-wide
  state) is never called. Device-side `tl.make_tensor_descriptor` would need one.
- WARP_SPECIALIZE=False: prefill_attention's three key loops (window edge masked, unmasked,
  diagonal masked), software-pipelined over num_stages with TMA loads.
- WARP_SPECIALIZE=True (WS_TILES; refused unless asked for: on the H200 its first GPU test never
  finished): ONE key loop, `tl.range(..., warp_specialize=True)`, every tile masked. Triton's
  Hopper auto-warp-specialization pass (sm_80/90; triton 3.6 and 3.9) then splits the kernel into
  a TMA producer warp group and two consumer warp groups (MMAs and softmax; at BLOCK_M 128 each
  takes 64 rows), 3 x num_warps warps, with setmaxnreg moving registers to the consumers. The
  pass takes only this shape: on both versions a second key loop, a peeled tile before or after
  the loop, or an early `return` fails it (compiled for sm_90 on the CPU), so programs past their
  span run an empty loop instead of returning. It applies at num_warps=4; at 8 it leaves the loop
  unspecialized (no error). Triton 3.9 also fails it at BLOCK_M 128 (3.6 compiles it); 64 rows
  compile on both. kernels/NOTES.md ("Hopper TMA variant") has the compile results.
"""

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from aios.kernels.device import is_hopper
from aios.kernels.prefill_attention import LOG2E, _dot

# (block_m, block_n, num_warps, num_stages, warp_specialize): what bench_kernels.py times and the
# GPU tests run. The first is the wrapper's choice on Hopper: the fastest at every prefill case of
# bench_kernels on the H200 (1.15-1.28x prefill_attention's; kernels/NOTES.md, "Hopper TMA variant").
TMA_TILES = [(128, 64, 4, 3, False), (128, 128, 8, 3, False), (64, 64, 4, 2, False)]
# The warp-specialized tiles (12 warps): they equal the ref under the CPU interpreter and compile for
# sm_90 (tests/test_triton_compiles_for_hopper.py; those of 128 rows on triton 3.6 only), but on the
# H200 (triton 3.6.0) the first of them never finished its first GPU test (killed after minutes, every
# other GPU test having passed in that run), so a launch of one is refused unless asked for by name
# (`allow_warp_specialize`; kernels/NOTES.md).
WS_TILES = [(128, 128, 4, 2, True), (128, 64, 4, 3, True), (128, 64, 4, 4, True), (64, 128, 4, 2, True)]
HEAD_DIMS = (64, 128)


@triton.jit
def _tma_tile(
    acc, l_i, m_i, q, q_pos, desc_k, desc_v, block_table_row, start_n, seqlen_k, kv_col, qk_scale, window,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
    SLIDING: tl.constexpr, UPCAST: tl.constexpr,
):
    block = tl.load(block_table_row + start_n // BLOCK_SIZE)
    if MASKED:
        # the box never passes the sequence's last key: a last tile short of keys is loaded shifted
        # left by what it lacks (its leading rows are earlier tiles' keys, or TMA's zeros before the
        # block's first slot: both masked below, and finite, so p = 0 times them is 0)
        shift = tl.minimum(seqlen_k - start_n - BLOCK_N, 0)
    else:
        shift = 0
    k = desc_k.load([block, start_n % BLOCK_SIZE + shift, kv_col]).reshape(BLOCK_N, HEAD_DIM)
    qk = _dot(q, k.T, "tf32", UPCAST) * qk_scale             # [BLOCK_M, BLOCK_N], log2 units
    if MASKED:
        offs_n = start_n + shift + tl.arange(0, BLOCK_N)     # each box row's key position
        visible = (offs_n[None, :] >= start_n) & (offs_n[None, :] <= q_pos[:, None])
        if SLIDING:
            visible = visible & (offs_n[None, :] > q_pos[:, None] - window)
        qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    if SLIDING:
        # a row may see no key yet (m_new = -inf): subtract 0 there, so p and alpha are 0, not NaN
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_sub = m_new
    p = tl.exp2(qk - m_sub[:, None])
    alpha = tl.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = desc_v.load([block, start_n % BLOCK_SIZE + shift, kv_col]).reshape(BLOCK_N, HEAD_DIM)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, "tf32", UPCAST)
    return acc, l_i, m_new


@triton.jit(do_not_specialize=["stride_bt"])
def _prefill_attention_tma_kernel(
    desc_q, desc_k, desc_v, out_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr, block_tables_ptr, qk_scale, window,
    stride_ot, stride_oh, stride_bt,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, SLIDING: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, UPCAST: tl.constexpr,
):
    # grid and tile order as prefill_attention's unpacked kernel: heads fastest, heaviest tiles first
    head = tl.program_id(0)
    seq = tl.program_id(1)
    m_block = tl.num_programs(2) - 1 - tl.program_id(2)
    q_start = tl.load(cu_seqlens_q_ptr + seq)
    seqlen_q = tl.load(cu_seqlens_q_ptr + seq + 1) - q_start
    seqlen_k = tl.load(cu_seqlens_k_ptr + seq + 1) - tl.load(cu_seqlens_k_ptr + seq)
    num_cached_tokens = seqlen_k - seqlen_q
    kv_col = (head // GROUP) * HEAD_DIM
    q = desc_q.load([q_start + m_block * BLOCK_M, head * HEAD_DIM])   # [BLOCK_M, HEAD_DIM]
    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q_pos = num_cached_tokens + offs_m
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    q_first = num_cached_tokens + m_block * BLOCK_M
    # tiles wholly right of the diagonal are never visited; nor is any by a tile past the span (no
    # early return: Triton's Hopper warp specialization refuses one, 3.6 and 3.9)
    end = tl.where(m_block * BLOCK_M < seqlen_q, tl.minimum(q_first + BLOCK_M, seqlen_k), 0)
    full_end = tl.minimum((q_first // BLOCK_N) * BLOCK_N, end)   # keys every row sees
    window_start = 0
    full_start = 0
    if SLIDING:
        # tiles wholly left of the first row's window are skipped; those crossing the last row's
        # window edge are masked (prefill_attention's bounds)
        window_start = (tl.maximum(q_first - window + 1, 0) // BLOCK_N) * BLOCK_N
        full_start = tl.cdiv(tl.maximum(q_first + BLOCK_M - window, 0), BLOCK_N) * BLOCK_N
        full_start = tl.minimum(full_start, full_end)
    if WARP_SPECIALIZE:
        # Triton's Hopper warp specialization takes a kernel with one loop of dots (3.6 and 3.9 fail
        # the pass with a second loop or a peeled tile, before or after it): one loop, every tile masked
        for start_n in tl.range(window_start, end, BLOCK_N, warp_specialize=True):
            acc, l_i, m_i = _tma_tile(acc, l_i, m_i, q, q_pos, desc_k, desc_v, block_table_row, start_n, seqlen_k,
                                      kv_col, qk_scale, window, HEAD_DIM, BLOCK_SIZE, BLOCK_N, True, SLIDING, UPCAST)
    else:
        # prefill_attention's loops: window edge masked, then unmasked, then the diagonal masked
        for start_n in range(window_start, full_start, BLOCK_N):
            acc, l_i, m_i = _tma_tile(acc, l_i, m_i, q, q_pos, desc_k, desc_v, block_table_row, start_n, seqlen_k,
                                      kv_col, qk_scale, window, HEAD_DIM, BLOCK_SIZE, BLOCK_N, True, True, UPCAST)
        for start_n in range(full_start, full_end, BLOCK_N):
            acc, l_i, m_i = _tma_tile(acc, l_i, m_i, q, q_pos, desc_k, desc_v, block_table_row, start_n, seqlen_k,
                                      kv_col, qk_scale, window, HEAD_DIM, BLOCK_SIZE, BLOCK_N, False, False, UPCAST)
        for start_n in range(full_end, end, BLOCK_N):
            acc, l_i, m_i = _tma_tile(acc, l_i, m_i, q, q_pos, desc_k, desc_v, block_table_row, start_n, seqlen_k,
                                      kv_col, qk_scale, window, HEAD_DIM, BLOCK_SIZE, BLOCK_N, True, SLIDING, UPCAST)

    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]   # l_i == 0 only on rows past the span (not stored)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = (q_start + offs_m).to(tl.int64)
    out_ptrs = out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(offs_m < seqlen_q)[:, None])


def _tma_config(head_dim: int, dtype: torch.dtype, device: torch.device, block_size: int) -> dict:
    """The tiles on Hopper (TMA_TILES[0]) or tiny ones under the CPU interpreter; ValueError where
    the kernel does not apply."""
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"prefill_attention_tma takes bf16 or fp16, not {dtype}: use prefill_attention")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"prefill_attention_tma takes head_dim {HEAD_DIMS}, not {head_dim}: use prefill_attention")
    if device.type != "cuda":
        cfg = dict(block_m=16, block_n=16, num_warps=4, num_stages=1, warp_specialize=False)
    elif not is_hopper(device):
        raise ValueError("prefill_attention_tma needs an sm_90 GPU (TMA): use prefill_attention")
    else:
        cfg = dict(zip(("block_m", "block_n", "num_warps", "num_stages", "warp_specialize"), TMA_TILES[0]))
    if block_size % cfg["block_n"]:
        raise ValueError(f"prefill_attention_tma needs the block size ({block_size}) a multiple of "
                         f"block_n={cfg['block_n']} (a key tile inside one block): use prefill_attention")
    return cfg


def check_prefill_attention_tma(head_dim: int, dtype: torch.dtype, device: torch.device, block_size: int) -> None:
    """Raise the ValueError prefill_attention_tma would raise for these, before any step runs (an
    engine built with attention_backend="triton-tma" checks at start-up, not inside a request)."""
    _tma_config(head_dim, dtype, device, block_size)


def _prefill_attention_tma_launch(
    q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, block_tables, scale,
    block_m: int, block_n: int, num_warps: int, num_stages: int, warp_specialize: bool,
    sliding_window: int | None = None, allow_warp_specialize: bool = False,
) -> torch.Tensor:
    """One launch at the given tiles. A warp-specialized one (WS_TILES) hung on the H200, so it runs
    only when asked for by name: the interpreter tests and the sm_90 compile harness do."""
    total_q, num_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    if block_size % block_n or num_heads % num_kv_heads or k_cache.shape[3] != head_dim:
        raise ValueError(f"prefill_attention_tma: block size {block_size}, block_n {block_n}, "
                         f"{num_heads}/{num_kv_heads} heads, head_dim {head_dim}/{k_cache.shape[3]}")
    # the 2-D views the descriptors address: [total_q, heads * D] and [slots, kv_heads * D], rows contiguous
    if q.stride(2) != 1 or q.stride(1) != head_dim:
        raise ValueError(f"prefill_attention_tma needs each q row's heads contiguous, strides {q.stride()}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("prefill_attention_tma needs contiguous caches (each layer's slice of the engine's is)")
    if warp_specialize and not allow_warp_specialize:
        raise ValueError("prefill_attention_tma: the warp-specialized loop did not finish on an H200 under "
                         "triton 3.6 (WS_TILES); allow_warp_specialize=True runs it anyway (interpreter, compile)")
    out = torch.empty(total_q, num_heads, head_dim, dtype=q.dtype, device=q.device)
    num_seqs = cu_seqlens_q.shape[0] - 1
    if total_q == 0 or num_seqs == 0:
        return out
    # K/V as [num_blocks, block_size, kv_heads * D]: a box [1, block_n, D] stays in one block, and
    # its rows before the block's first slot (a negative slot) are TMA's zeros
    width = num_kv_heads * head_dim
    kv_shape, kv_strides = [num_blocks, block_size, width], [block_size * width, width, 1]
    kv_box = [1, block_n, head_dim]
    desc_q = TensorDescriptor(q, [total_q, num_heads * head_dim], [q.stride(0), 1], [block_m, head_dim])
    desc_k = TensorDescriptor(k_cache, kv_shape, kv_strides, kv_box)
    desc_v = TensorDescriptor(v_cache, kv_shape, kv_strides, kv_box)
    grid = (num_heads, num_seqs, triton.cdiv(max_seqlen_q, block_m))
    _prefill_attention_tma_kernel[grid](
        desc_q, desc_k, desc_v, out, cu_seqlens_q, cu_seqlens_k, block_tables, scale * LOG2E,
        0 if sliding_window is None else sliding_window, out.stride(0), out.stride(1), block_tables.stride(0),
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_M=block_m,
        BLOCK_N=block_n, SLIDING=sliding_window is not None, WARP_SPECIALIZE=warp_specialize,
        UPCAST=q.device.type != "cuda", num_warps=num_warps, num_stages=num_stages,
    )
    return out


def prefill_attention_tma(
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
) -> torch.Tensor:
    """prefill_attention with TMA loads, at TMA_TILES[0] on Hopper (same arguments, same result);
    raises ValueError where it does not apply (module docstring)."""
    cfg = _tma_config(q.shape[2], q.dtype, q.device, k_cache.shape[1])
    return _prefill_attention_tma_launch(q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                         block_tables, scale, **cfg, sliding_window=sliding_window)
