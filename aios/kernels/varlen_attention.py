"""Causal attention over contiguous, variable-length K/V: the prefill of prompts with nothing cached.

When no sequence of a prefill step attends to K/V from an earlier step (no prefix-cache hit, no
earlier chunk, no decode row), its keys and values are exactly the step's new tokens, one packed
run per sequence, as `cu_seqlens` delimits them:
    q: [total, num_heads, head_dim]   k, v: [total, num_kv_heads, head_dim]   out: like q
Attention over them needs no block table. This is the case of a fresh long prompt, where prefill
is most of the time (BENCHMARKS.md, "Prefill of long prompts"), and where the paged Triton kernel
(prefill_attention.py) runs at ~0.7x of FlashAttention-2 on an H200.

`varlen_attention` is torch's own FlashAttention-2 kernel (`aten::_flash_attention_forward`, what
`torch.nn.attention.varlen.varlen_attn` calls; GQA is native, a sliding window is its left window).
It runs on CUDA in fp16/bf16 only (aios/layers/backend.py's `flash_varlen_available` says whether
this build and device have it). `varlen_attention_ref` is the spec: per sequence, the score matrix whole, fp32 softmax.

Window convention (HF's): with `sliding_window=W` query p sees keys p - W < j <= p, which is
FlashAttention's window (W - 1, 0).
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int, scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention of each packed sequence over itself; torch's FlashAttention-2 (CUDA, fp16/bf16)."""
    window_left = -1 if sliding_window is None else sliding_window - 1
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, 0.0, True, False,
        scale=scale, window_size_left=window_left, window_size_right=0)[0]
    return out


def varlen_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                         max_seqlen: int, scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """Plain-torch spec: loop over sequences, fp32 scores and softmax, the causal (and window) mask."""
    total, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    group = num_heads // num_kv_heads
    out = torch.empty_like(q)
    cu = cu_seqlens.tolist()
    for s in range(len(cu) - 1):
        a, b = cu[s], cu[s + 1]
        if a == b:
            continue
        qs = q[a:b].float().reshape(b - a, num_kv_heads, group, head_dim)
        scores = torch.einsum("qhgd,khd->hgqk", qs, k[a:b].float()) * scale
        pos = torch.arange(b - a, device=q.device)
        hidden = pos[None, :] > pos[:, None]
        if sliding_window is not None:
            hidden |= pos[None, :] <= pos[:, None] - sliding_window
        probs = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
        out[a:b] = torch.einsum("hgqk,khd->qhgd", probs, v[a:b].float()).reshape(b - a, num_heads, head_dim).to(q.dtype)
    return out
