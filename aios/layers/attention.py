"""Paged attention: position q and k, write this step's K/V into the cache, attend over it (lessons 06, 09, 10).

The layer owns its slice of the KV cache and everything that touches it:
    q/k-norm (families that have one, e.g. Qwen3) -> RoPE -> store k, v at slot_mapping -> attention
The K/V of every token, cached prefix and new tokens alike, is read through `block_tables`, so
chunked prefill, prefix-cache hits and decode all use one cache layout:
    k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim]   (one pair per layer)
Steps where every sequence computes one token use the decode kernel (flash-decoding); any other
step uses the variable-length prefill kernel, which also handles one-token rows mixed in.
Which kernels run is the backend's choice, bound at construction (aios/layers/backend.py): with
fused kernels, q/k-norm + RoPE + the K/V store are one launch (`qk_norm_rope_store_kvcache`), and
so are RoPE + the K/V store of a family without a q/k norm (`rope_store_kvcache`).
A layer built with `sliding_window=W` (Mistral, Gemma 3's local layers) binds W into its attention
functions: each query sees its last W tokens, itself included (HF's mask: p - W < j <= p). The
cache still holds every token, so prefix caching and chunked prefill are unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch
from torch import nn

from aios.kernels import qk_norm_rope_ref, qk_norm_rope_store_kvcache, rope_store_kvcache
from aios.layers.backend import Backend, resolve
from aios.layers.layernorm import RMSNorm
from aios.layers.rotary_embedding import RotaryEmbedding
from aios.utils.context import Context


class Attention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 rotary_emb: RotaryEmbedding, backend: Backend | None = None,
                 sliding_window: int | None = None) -> None:
        super().__init__()
        backend = resolve(backend)
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.rotary_emb = rotary_emb          # the model's one table, shared by every layer
        self.attn_backend = backend.attention     # store_kvcache, prefill_attention, decode_attention
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"sliding_window must be >= 1 or None, got {sliding_window}")
        self.sliding_window = sliding_window
        if sliding_window is not None:            # bound once; a backend without windows runs full attention
            self.attn_backend = replace(
                self.attn_backend,
                prefill_attention=partial(self.attn_backend.prefill_attention, sliding_window=sliding_window),
                decode_attention=partial(self.attn_backend.decode_attention, sliding_window=sliding_window))
        self.fused_qk_norm_rope_store = backend.fused_kernels    # lesson 10: one launch per layer
        self.k_cache = torch.tensor([])       # set by ModelRunner once the cache is allocated
        self.v_cache = torch.tensor([])

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                context: Context, q_norm: RMSNorm | None = None, k_norm: RMSNorm | None = None
                ) -> torch.Tensor:
        # q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim], straight
        # out of the qkv projection (strided views are fine). q_norm, k_norm: per-head RMSNorms to
        # apply before RoPE (Qwen3); None for a family without them, or whose q/k norm is another
        # function (it applies that itself first; the fused kernel computes weight * rmsnorm(x) only)
        cos_sin_cache = self.rotary_emb.cos_sin_cache
        if self.fused_qk_norm_rope_store:          # one kernel; k and v go straight to the cache
            if q_norm is not None:
                q = qk_norm_rope_store_kvcache(q, k, v, q_norm.weight, k_norm.weight, positions, cos_sin_cache,
                                               q_norm.eps, self.k_cache, self.v_cache, context.slot_mapping)
            else:
                q = rope_store_kvcache(q, k, v, positions, cos_sin_cache, self.k_cache, self.v_cache,
                                       context.slot_mapping)
        else:
            if q_norm is not None:
                q, k = qk_norm_rope_ref(q, k, q_norm.weight, k_norm.weight, positions, cos_sin_cache, q_norm.eps)
            else:
                q, k = self.rotary_emb(positions, q), self.rotary_emb(positions, k)
            self.attn_backend.store_kvcache(k, v, self.k_cache, self.v_cache, context.slot_mapping)
        if context.is_prefill:
            # a static tile schedule only under a mixed step's CUDA graph (the triton backend's kernel takes it)
            tiles = {} if context.q_tiles is None else {"q_tiles": context.q_tiles}
            return self.attn_backend.prefill_attention(q, self.k_cache, self.v_cache, context.cu_seqlens_q,
                                                  context.cu_seqlens_k, context.max_seqlen_q,
                                                  context.max_seqlen_k, context.block_tables, self.scale, **tiles)
        return self.attn_backend.decode_attention(q, self.k_cache, self.v_cache, context.block_tables,
                                             context.context_lens, self.scale)
