"""Qwen3's per-head RMSNorm of q and k, then NeoX-style rotary embedding, in one pass (and the same
pass without the norm, for families that have none: Llama, Qwen2, Mistral, or whose norm is
another function and applied before: Gemma 3).

q `[N, num_heads, head_dim]` and k `[N, num_kv_heads, head_dim]` may be strided views into the
fused qkv projection output `[N, (num_heads + 2 * num_kv_heads) * head_dim]`. For each head:
    x = weight * rmsnorm(x).to(dtype)                       (HF Qwen3RMSNorm, weight `[head_dim]`)
    x = x * cos + rotate_half(x) * sin                      (HF apply_rotary_pos_emb)
with rotate_half(x) = cat(-x[half:], x[:half]). `cos_sin_cache` `[max_position, head_dim]` fp32
holds cos(pos * inv_freq) in its first head_dim/2 columns and sin(...) in the last head_dim/2;
HF casts cos/sin to the activation dtype and does the rotation in that dtype, and so do we.

Invariants (tests/test_kernels.py checks each):
- Outputs are new contiguous `[N, heads, head_dim]` tensors in q's dtype (the norm weights are
  expected in that dtype too, as the model loads them); the inputs are never written.
- The Triton kernel rounds at every point HF rounds (norm output, each product, the sum), so it
  differs from the ref only through the fp32 sum of squares and rsqrt: at most 1 ulp of the dtype
  on the normed value, which the rotation can carry to ~2 ulp of the output.

`qk_norm_rope_store_kvcache` is the same pass that also writes the new k (normed and rotated) and v
into their slots of the paged KV cache, instead of handing k back for store_kvcache: one launch
per layer instead of two (lesson 10; at batch 1 every launch saved is ~1% of a token's time).
Slot -1 (a padding row) writes nothing, as in store_kvcache. `rope_store_kvcache` is that pass with
no norm (the kernel's HAS_NORM=False): x = x * cos + rotate_half(x) * sin, rounded as HF rounds.
"""

import torch
import triton
import triton.language as tl

from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel
from aios.kernels.rmsnorm import rms_norm_ref
from aios.kernels.store_kvcache import store_kvcache_ref


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_ref(x: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> torch.Tensor:
    """HF apply_rotary_pos_emb of one of q, k `[N, heads, head_dim]`: x * cos + rotate_half(x) * sin,
    cos/sin cast to x's dtype first. A new contiguous tensor."""
    half = x.shape[-1] // 2
    cos_sin = cos_sin_cache[positions]  # [N, head_dim]
    cos = torch.cat((cos_sin[:, :half], cos_sin[:, :half]), dim=-1)[:, None, :].to(x.dtype)
    sin = torch.cat((cos_sin[:, half:], cos_sin[:, half:]), dim=-1)[:, None, :].to(x.dtype)
    return ((x * cos) + (_rotate_half(x) * sin)).contiguous()


def qk_norm_rope_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF Qwen3Attention's q_norm/k_norm followed by apply_rotary_pos_emb."""
    return (rope_ref(rms_norm_ref(q, q_weight, eps), positions, cos_sin_cache),
            rope_ref(rms_norm_ref(k, k_weight, eps), positions, cos_sin_cache))


def qk_norm_rope_store_kvcache_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    eps: float,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """qk_norm_rope_ref, then store_kvcache_ref of the new k and v; returns q."""
    q, k = qk_norm_rope_ref(q, k, q_weight, k_weight, positions, cos_sin_cache, eps)
    store_kvcache_ref(k, v, k_cache, v_cache, slot_mapping)
    return q


def rope_store_kvcache_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """rope_ref of q and k, then store_kvcache_ref of the new k and v; returns q."""
    q, k = rope_ref(q, positions, cos_sin_cache), rope_ref(k, positions, cos_sin_cache)
    store_kvcache_ref(k, v, k_cache, v_cache, slot_mapping)
    return q


@triton.jit
def _norm_rope_heads(
    src_ptr, dst_ptr, weight_ptr, stride_h, cos, sin, eps,
    NUM_HEADS: tl.constexpr, BLOCK_H: tl.constexpr, HALF: tl.constexpr, BLOCK_HALF: tl.constexpr,
    HAS_NORM: tl.constexpr,
):
    offs_h = tl.arange(0, BLOCK_H)[:, None]
    offs_d = tl.arange(0, BLOCK_HALF)[None, :]
    mask = (offs_h < NUM_HEADS) & (offs_d < HALF)
    x1 = tl.load(src_ptr + offs_h * stride_h + offs_d, mask=mask, other=0.0)
    x2 = tl.load(src_ptr + offs_h * stride_h + HALF + offs_d, mask=mask, other=0.0)
    dtype = dst_ptr.dtype.element_ty
    n1 = x1.to(tl.float32)
    n2 = x2.to(tl.float32)
    if HAS_NORM:
        rstd = tl.rsqrt((tl.sum(n1 * n1, 1) + tl.sum(n2 * n2, 1)) / (2 * HALF) + eps)[:, None]
        w1 = tl.load(weight_ptr + offs_d, mask=offs_d < HALF, other=0.0).to(tl.float32)
        w2 = tl.load(weight_ptr + HALF + offs_d, mask=offs_d < HALF, other=0.0).to(tl.float32)
        # Round wherever HF rounds: normed value, weight product, each rotation product, the sum.
        n1 = (w1 * (n1 * rstd).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
        n2 = (w2 * (n2 * rstd).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    o1 = (n1 * cos).to(dtype).to(tl.float32) - (n2 * sin).to(dtype).to(tl.float32)
    o2 = (n2 * cos).to(dtype).to(tl.float32) + (n1 * sin).to(dtype).to(tl.float32)
    dst = dst_ptr + offs_h * (2 * HALF) + offs_d
    tl.store(dst, o1.to(dtype), mask=mask)
    tl.store(dst + HALF, o2.to(dtype), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(
    q_ptr, k_ptr, v_ptr, q_weight_ptr, k_weight_ptr, positions_ptr, cos_sin_ptr, q_out_ptr, k_out_ptr,
    v_cache_ptr, slot_mapping_ptr, eps,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cs,
    NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_QH: tl.constexpr,
    BLOCK_KH: tl.constexpr, HALF: tl.constexpr, BLOCK_HALF: tl.constexpr,
    STORE_KV: tl.constexpr, HAS_NORM: tl.constexpr, USE_PDL: tl.constexpr,
):
    # One program per token: all its q heads and k heads share one cos/sin row.
    wait_for_previous_kernel(USE_PDL)
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)[None, :]
    dtype = q_out_ptr.dtype.element_ty
    cos = tl.load(cos_sin_ptr + pos * stride_cs + offs_d, mask=offs_d < HALF, other=0.0)
    sin = tl.load(cos_sin_ptr + pos * stride_cs + HALF + offs_d, mask=offs_d < HALF, other=0.0)
    cos = cos.to(dtype).to(tl.float32)  # HF casts cos/sin to the activation dtype
    sin = sin.to(dtype).to(tl.float32)
    head_dim = 2 * HALF
    _norm_rope_heads(q_ptr + token * stride_qt, q_out_ptr + token * NUM_HEADS * head_dim,
                     q_weight_ptr, stride_qh, cos, sin, eps, NUM_HEADS, BLOCK_QH, HALF, BLOCK_HALF, HAS_NORM)
    if STORE_KV:
        # k_out_ptr is the k cache; a cache slot holds NUM_KV_HEADS contiguous heads, as k_out rows do.
        slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
        if slot >= 0:
            _norm_rope_heads(k_ptr + token * stride_kt, k_out_ptr + slot * NUM_KV_HEADS * head_dim,
                             k_weight_ptr, stride_kh, cos, sin, eps, NUM_KV_HEADS, BLOCK_KH, HALF, BLOCK_HALF, HAS_NORM)
            offs_h = tl.arange(0, BLOCK_KH)[:, None]
            offs_v = tl.arange(0, 2 * BLOCK_HALF)[None, :]
            mask = (offs_h < NUM_KV_HEADS) & (offs_v < head_dim)
            v = tl.load(v_ptr + token * stride_vt + offs_h * stride_vh + offs_v, mask=mask)
            tl.store(v_cache_ptr + slot * NUM_KV_HEADS * head_dim + offs_h * head_dim + offs_v, v, mask=mask)
    else:
        _norm_rope_heads(k_ptr + token * stride_kt, k_out_ptr + token * NUM_KV_HEADS * head_dim,
                         k_weight_ptr, stride_kh, cos, sin, eps, NUM_KV_HEADS, BLOCK_KH, HALF, BLOCK_HALF, HAS_NORM)


def _launch(q, k, v, q_weight, k_weight, positions, cos_sin_cache, eps, q_out, k_out, v_cache, slot_mapping):
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    assert k.shape == (num_tokens, num_kv_heads, head_dim) and head_dim % 2 == 0
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and cos_sin_cache.stride(-1) == 1
    assert positions.shape == (num_tokens,) and cos_sin_cache.shape[1] == head_dim
    if num_tokens == 0:
        return
    store_kv = v_cache is not None
    pdl = pdl_enabled(q.device)
    has_norm = q_weight is not None
    if not has_norm:                       # the pointers are never read: any tensor of the device
        q_weight = k_weight = positions
    half = head_dim // 2
    block_qh = triton.next_power_of_2(num_heads)
    _qk_norm_rope_kernel[(num_tokens,)](
        q, k, v if store_kv else k, q_weight, k_weight, positions, cos_sin_cache, q_out, k_out,
        v_cache if store_kv else k_out, slot_mapping if store_kv else positions, eps,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        v.stride(0) if store_kv else 0, v.stride(1) if store_kv else 0, cos_sin_cache.stride(0),
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, BLOCK_QH=block_qh,
        BLOCK_KH=triton.next_power_of_2(num_kv_heads), HALF=half,
        BLOCK_HALF=triton.next_power_of_2(half), STORE_KV=store_kv, HAS_NORM=has_norm, USE_PDL=pdl,
        num_warps=4 if block_qh * head_dim >= 2048 else 2, launch_pdl=pdl,
    )


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of qk_norm_rope_ref (same arguments, same result within ~2 ulp)."""
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    _launch(q, k, None, q_weight, k_weight, positions, cos_sin_cache, eps, q_out, k_out, None, None)
    return q_out, k_out


def _store_target(q, k, v, k_cache, v_cache, slot_mapping) -> torch.Tensor:
    """Check the cache arguments of the storing variants; return q's output tensor."""
    num_kv_heads, head_dim = k.shape[1:]
    assert v.shape == k.shape and v.stride(-1) == 1 and slot_mapping.shape == (q.shape[0],)
    assert k_cache.shape[2:] == (num_kv_heads, head_dim) and v_cache.shape == k_cache.shape
    assert k_cache.is_contiguous() and v_cache.is_contiguous(), "slot s starts at s * kv_heads * head_dim"
    assert k_cache.dtype == k.dtype and v_cache.dtype == v.dtype
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


def qk_norm_rope_store_kvcache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    eps: float,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """Triton version of qk_norm_rope_store_kvcache_ref: one launch; returns q."""
    q_out = _store_target(q, k, v, k_cache, v_cache, slot_mapping)
    _launch(q, k, v, q_weight, k_weight, positions, cos_sin_cache, eps, q_out, k_cache, v_cache, slot_mapping)
    return q_out


def rope_store_kvcache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """Triton version of rope_store_kvcache_ref (families without a q/k norm): one launch; returns q."""
    q_out = _store_target(q, k, v, k_cache, v_cache, slot_mapping)
    _launch(q, k, v, None, None, positions, cos_sin_cache, 0.0, q_out, k_cache, v_cache, slot_mapping)
    return q_out
