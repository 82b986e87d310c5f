"""Decode attention: one new query token per sequence over its paged KV cache (flash-decoding).

q `[batch, num_heads, head_dim]`; sequence s attends its `context_lens[s]` cached tokens, which
already include the new token's K/V (store_kvcache runs first). Token p of sequence s lives at
`k_cache[block_tables[s, p // block_size], p % block_size]`.

Invariants (tests/test_kernels.py checks each):
- Softmax runs in fp32; the output has q's dtype. GQA: query head h reads kv head
  `h // (num_heads // num_kv_heads)`, and the Triton kernel reads each K/V tile once per group.
- Sliding window (`sliding_window=W`): the new token (position context_lens[s] - 1) attends only
  the last W tokens, itself included (HF's p - W < j <= p); the kernel splits only that span.
- A sequence with context_lens[s] == 0 (a padding row of a CUDA-graph batch) gets zeros and
  reads nothing from the cache.
- The Triton version never synchronizes with the host: the number of splits comes from static
  facts (batch size, block-table width, block size, SM count), the split lengths are computed on
  the device, and scratch buffers come from the caching allocator (the graph pool under capture).

Triton algorithm (flash-decoding): each program takes one sequence, one kv head (all the query
heads of its GQA group, padded to >= 16 rows for tl.dot) and one of num_splits slices of the
context, and writes a partial (log-sum-exp, normalized output). A second small kernel merges the
partials. With num_splits == 1 the first kernel writes the output directly.
"""

import torch
import triton
import triton.language as tl

from aios.kernels.device import sm_count
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel
from aios.kernels.prefill_attention import LOG2E, _dot, _gather_paged, _paged_token_offsets


def decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Plain-torch spec: per sequence, gather its K/V through the block table, fp32 softmax."""
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.zeros(batch, num_heads, head_dim, dtype=q.dtype, device=q.device)
    for s, context_len in enumerate(context_lens.tolist()):
        if context_len == 0:
            continue
        k = _gather_paged(k_cache, block_tables[s], context_len).float()  # [ctx, kv_heads, hd]
        v = _gather_paged(v_cache, block_tables[s], context_len).float()
        qs = q[s].float().reshape(num_kv_heads, group, head_dim)
        scores = torch.einsum("hgd,khd->hgk", qs, k) * scale
        if sliding_window is not None:
            scores[..., : max(0, context_len - sliding_window)] = float("-inf")
        probs = torch.softmax(scores, dim=-1)
        out[s] = torch.einsum("hgk,khd->hgd", probs, v).reshape(num_heads, head_dim).to(q.dtype)
    return out


@triton.jit(do_not_specialize=["num_splits", "stride_bt"])   # both change between eager steps
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    out_ptr, partial_out_ptr, partial_lse_ptr, qk_scale, num_splits, window,
    stride_qb, stride_qh, stride_ob, stride_oh,
    stride_block, stride_slot, stride_kv_head, stride_bt,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, TILE_IN_BLOCK: tl.constexpr,
    DIRECT_OUTPUT: tl.constexpr, SLIDING: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    if SLIDING:
        # keys [first_key, context_len); the split span starts at the tile holding first_key
        first_key = tl.maximum(context_len - window, 0)
        span_start = (first_key // BLOCK_N) * BLOCK_N
    else:
        first_key = 0
        span_start = 0
    # Split lengths are whole tiles, so a tile never straddles two splits (or two blocks).
    split_len = tl.cdiv(tl.cdiv(context_len - span_start, num_splits), BLOCK_N) * BLOCK_N
    start = span_start + split * split_len
    end = tl.minimum(start + split_len, context_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_g = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    q = tl.load(q_ptr + seq.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_g[:, None], other=0.0)  # [BLOCK_G, HEAD_DIM]
    k_head_ptr = k_cache_ptr + kv_head * stride_kv_head
    v_head_ptr = v_cache_ptr + kv_head * stride_kv_head
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
    # An empty split (start >= end) skips the loop and leaves the neutral partial (-inf, 0, 0).
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        if SLIDING:
            mask_n = mask_n & (offs_n >= first_key)
        tok = _paged_token_offsets(block_table_row, start_n, mask_n, stride_block, stride_slot,
                                   BLOCK_SIZE, BLOCK_N, TILE_IN_BLOCK)
        k = tl.load(k_head_ptr + tok[None, :] + offs_d[:, None], mask=mask_n[None, :], other=0.0)
        v = tl.load(v_head_ptr + tok[:, None] + offs_d[None, :], mask=mask_n[:, None], other=0.0)
        qk = _dot(q, k, PRECISION, UPCAST) * qk_scale  # [BLOCK_G, BLOCK_N], log2 units
        qk = tl.where(mask_n[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: every split's first tile holds a visible key
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    has_keys = l_i > 0
    acc = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    if DIRECT_OUTPUT:
        out_ptrs = out_ptr + seq.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_g[:, None])
    else:
        # partial_out [batch, num_heads, num_splits, HEAD_DIM], partial_lse [batch, num_heads, num_splits]
        row = (seq.to(tl.int64) * (tl.num_programs(1) * GROUP) + heads) * num_splits + split
        tl.store(partial_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=mask_g[:, None])
        lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        tl.store(partial_lse_ptr + row, lse, mask=mask_g)


@triton.jit(do_not_specialize=["num_splits"])
def _decode_reduce_kernel(
    partial_out_ptr, partial_lse_ptr, out_ptr, num_splits, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    row = seq.to(tl.int64) * tl.num_programs(1) + head
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_s = offs_s < num_splits
    lse = tl.load(partial_lse_ptr + row * num_splits + offs_s, mask=mask_s, other=float("-inf"))
    lse_max = tl.max(lse, 0)
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)  # all splits empty: weights are 0
    weight = tl.exp2(lse - lse_max)  # [BLOCK_S], 0 for empty splits
    part = tl.load(partial_out_ptr + (row * num_splits + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                   mask=mask_s[:, None], other=0.0)
    total = tl.sum(weight, 0)
    acc = tl.sum(part * weight[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq.to(tl.int64) * stride_ob + head * stride_oh + offs_d,
             acc.to(out_ptr.dtype.element_ty))


def _decode_num_splits(batch: int, num_kv_heads: int, max_context: int, device: torch.device,
                       block_n: int) -> int:
    """Enough programs to fill the GPU about twice, with at least two tiles of keys per split."""
    programs = batch * num_kv_heads
    wanted = triton.cdiv(2 * sm_count(device), programs)
    most = max(1, max_context // (2 * block_n))
    return max(1, min(wanted, most, 64))


def _decode_config(head_dim: int, dtype: torch.dtype, device: torch.device) -> dict:
    if device.type != "cuda":
        return dict(block_n=16, num_warps=4, num_stages=1)
    if dtype == torch.float32 or head_dim > 128:
        return dict(block_n=32, num_warps=4, num_stages=2)
    return dict(block_n=64, num_warps=4, num_stages=3)


def _decode_attention_launch(
    q, k_cache, v_cache, block_tables, context_lens, scale,
    num_splits: int, block_n: int, num_warps: int, num_stages: int, sliding_window: int | None = None,
) -> torch.Tensor:
    batch, num_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    assert num_heads % num_kv_heads == 0 and k_cache.shape[3] == head_dim
    assert head_dim >= 16 and head_dim & (head_dim - 1) == 0, "Triton path needs a power-of-two head_dim"
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1 and q.stride(-1) == 1
    group = num_heads // num_kv_heads
    out = torch.empty(batch, num_heads, head_dim, dtype=q.dtype, device=q.device)
    if batch == 0:
        return out
    direct = num_splits == 1
    pdl = pdl_enabled(q.device)
    if direct:
        partial_out = partial_lse = out  # unused
    else:
        partial_out = torch.empty(batch, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
        partial_lse = torch.empty(batch, num_heads, num_splits, dtype=torch.float32, device=q.device)
    _decode_split_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, partial_out, partial_lse,
        scale * LOG2E, num_splits, 0 if sliding_window is None else sliding_window,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, BLOCK_N=block_n, TILE_IN_BLOCK=block_size % block_n == 0,
        DIRECT_OUTPUT=direct, SLIDING=sliding_window is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST=q.device.type != "cuda", USE_PDL=pdl, num_warps=num_warps, num_stages=num_stages, launch_pdl=pdl,
    )
    if not direct:
        _decode_reduce_kernel[(batch, num_heads)](
            partial_out, partial_lse, out, num_splits, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, BLOCK_S=triton.next_power_of_2(num_splits), USE_PDL=pdl, num_warps=4,
            launch_pdl=pdl,
        )
    return out


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Triton version of decode_attention_ref (same arguments, same result; graph capturable)."""
    cfg = _decode_config(q.shape[2], q.dtype, q.device)
    max_context = block_tables.shape[1] * k_cache.shape[1]
    if sliding_window is not None:   # the span a split divides: the window and its first tile's head
        max_context = min(max_context, sliding_window + cfg["block_n"])
    num_splits = _decode_num_splits(q.shape[0], k_cache.shape[2], max_context, q.device, cfg["block_n"])
    return _decode_attention_launch(q, k_cache, v_cache, block_tables, context_lens, scale,
                                    num_splits=num_splits, **cfg, sliding_window=sliding_window)
