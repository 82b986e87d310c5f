"""Lesson 04's teaching loop: prefill once, then decode one token at a time from a KV cache.

Slow on purpose (one sequence, plain torch, a cache that grows by concatenation), and below the
engine's floor: it reuses lesson 03's `forward`, which runs lesson 03's own modules (or
aios's fused ones) with plain attention. The only new thing is the cache: each layer keeps the K
and V of every token it has seen, so a decode step computes ONE token and attends to the cached rest.
"""

from __future__ import annotations

import torch

from lessons.common import load_module

forward = load_module("03_own_the_model/no_cache_loop.py").forward


class GrowingKVCache:
    """Per layer, K and V of all tokens so far, grown with torch.cat (a new tensor every step)."""

    def __init__(self, num_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers
        self.bytes_copied = 0                 # what torch.cat moved: the old cache plus the new K/V

    def update(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        if self.k[layer] is None:
            self.k[layer], self.v[layer] = k, v
        else:
            self.k[layer] = torch.cat([self.k[layer], k])        # [tokens so far, kv_heads, head_dim]
            self.v[layer] = torch.cat([self.v[layer], v])
            self.bytes_copied += 2 * self.k[layer].numel() * self.k[layer].element_size()
        return self.k[layer], self.v[layer]


def generate_with_cache(model, prompt_ids: list[int], max_tokens: int, cache=None,
                        fused_norm: bool = False) -> tuple[list[int], int, object]:
    """Greedy decoding with a KV cache. Returns (new tokens, tokens computed, the cache)."""
    device = model.lm_head.weight.device
    cache = cache if cache is not None else GrowingKVCache(len(model.model.layers))
    # prefill: the whole prompt in one forward; its K/V land in the cache
    ids = torch.tensor(prompt_ids, device=device)
    logits = forward(model, ids, torch.arange(len(prompt_ids), device=device), cache, fused_norm)
    computed = len(prompt_ids)
    out = [int(logits.argmax())]
    # decode: one token per step, at position len(prompt) + i
    for _ in range(max_tokens - 1):
        pos = len(prompt_ids) + len(out) - 1
        logits = forward(model, torch.tensor([out[-1]], device=device), torch.tensor([pos], device=device),
                         cache, fused_norm)
        computed += 1
        out.append(int(logits.argmax()))
    return out, computed, cache
