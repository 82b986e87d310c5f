"""Causal attention over contiguous, variable-length K/V: the prefill of prompts with nothing cached.

When no sequence of a prefill step attends to K/V from an earlier step (no prefix-cache hit, no
earlier chunk, no decode row), its keys and values are exactly the step's new tokens, one packed
run per sequence, as `cu_seqlens` delimits them:
    q: [total, num_heads, head_dim]   k, v: [total, num_kv_heads, head_dim]   out: like q
Attention over them needs no block table. This is the case of a fresh long prompt, where prefill
is most of the time (BENCHMARKS.md, "Prefill of long prompts").

`varlen_attention` is cuDNN's fused (flash) attention through torch, `aten::_cudnn_attention_forward`
with cumulative sequence lengths: on an H200 it runs causal 16k-token prompts at ~570 TFLOP/s,
where the paged Triton kernel (prefill_attention.py) runs ~410 and torch's own FlashAttention-2
build ~330 (bench_kernels.py). Its ragged path takes K/V with as many heads as q, so a GQA model's
are repeated first, and it has no sliding window: windowed layers keep the paged kernel. It runs on
CUDA in fp16/bf16 only (aios/layers/backend.py's `cudnn_varlen_available` says where).
`varlen_attention_ref` is the spec: per sequence, the score matrix whole, fp32 softmax.
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int, scale: float) -> torch.Tensor:
    """Causal attention of each packed sequence over itself; cuDNN's fused attention (CUDA, fp16/bf16)."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return torch.ops.aten._cudnn_attention_forward(
        q, k, v, None, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, True, 0.0, True, False, scale=scale)[0]


def varlen_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                         max_seqlen: int, scale: float) -> torch.Tensor:
    """Plain-torch spec: loop over sequences, fp32 scores and softmax, the causal mask."""
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
        probs = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
        out[a:b] = torch.einsum("hgqk,khd->qhgd", probs, v[a:b].float()).reshape(b - a, num_heads, head_dim).to(q.dtype)
    return out
