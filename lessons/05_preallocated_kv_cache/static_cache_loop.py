"""Lesson 05's teaching loop: a KV cache allocated once, written by position.

Below the engine's floor, like lessons 03-04 (it reuses their `forward` and decode loop). The
cache is one tensor per K and V, [num_layers, max_len, num_kv_heads, head_dim], allocated before
the first token. A step writes its K/V at `positions` (`k_cache[layer, positions] = k`) and reads
back a view of the first `end` positions: nothing is copied, nothing is allocated per step, and
the memory a sequence will need is known up front (what lesson 06 pages).
"""

from __future__ import annotations

import torch


class StaticKVCache:
    def __init__(self, num_layers: int, max_len: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str = "cpu") -> None:
        shape = (num_layers, max_len, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.bytes_copied = 0                 # only the new tokens' K/V are ever written

    def update(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k[layer, positions] = k           # position-indexed write, in place
        self.v[layer, positions] = v
        self.bytes_copied += 2 * k.numel() * k.element_size()
        end = int(positions[-1]) + 1
        return self.k[layer, :end], self.v[layer, :end]          # views: no copy

    @property
    def bytes_reserved(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def for_model(model, max_len: int) -> StaticKVCache:
    attn = model.model.layers[0].self_attn
    w = model.lm_head.weight
    return StaticKVCache(len(model.model.layers), max_len, attn.num_kv_heads, attn.head_dim, w.dtype, w.device)
