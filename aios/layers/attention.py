"""Paged attention: write this step's K/V into the cache, then attend over the cache (lessons 06, 09).

The K/V of every token, cached prefix and new tokens alike, is read through `block_tables`, so
chunked prefill, prefix-cache hits and decode all use one cache layout:
    k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim]   (one pair per layer)
Steps where every sequence computes one token use the decode kernel (flash-decoding); any other
step uses the variable-length prefill kernel, which also handles one-token rows mixed in.
On CPU the torch references in aios/kernels run instead of the Triton kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from aios.kernels import (
    decode_attention,
    decode_attention_ref,
    prefill_attention,
    prefill_attention_ref,
    store_kvcache,
    store_kvcache_ref,
)
from aios.utils.context import Context


class Attention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.k_cache = torch.tensor([])       # set by ModelRunner once the cache is allocated
        self.v_cache = torch.tensor([])
        self.use_triton = True                # ModelRunner: False for attention_backend="torch"

    def forward(self, q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor | None, context: Context
                ) -> torch.Tensor:
        # q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim], or None
        # when the caller already wrote them into the cache (qk_norm_rope_store_kvcache, lesson 10)
        on_gpu = q.is_cuda and self.use_triton
        if k is not None:
            store = store_kvcache if on_gpu else store_kvcache_ref
            store(k, v, self.k_cache, self.v_cache, context.slot_mapping)
        if context.is_prefill:
            fn = prefill_attention if on_gpu else prefill_attention_ref
            return fn(q, self.k_cache, self.v_cache, context.cu_seqlens_q, context.cu_seqlens_k,
                      context.max_seqlen_q, context.max_seqlen_k, context.block_tables, self.scale)
        fn = decode_attention if on_gpu else decode_attention_ref
        return fn(q, self.k_cache, self.v_cache, context.block_tables, context.context_lens, self.scale)
