"""Lesson 04: the KV cache. Prefill the prompt once, then decode one token per step.

`forward(model, input_ids, positions, cache)` (lessons/03_own_the_model/no_cache_loop.py) runs the
model on input_ids at positions; in every layer it calls `cache.update(layer, positions, k, v)`
with this step's K/V and attends to what update returns. It returns the last position's logits.
Check: python lessons/check.py 04
"""

import torch

from lessons.common import load_module

forward = load_module("03_own_the_model/no_cache_loop.py").forward


class KVCache:
    """Per layer, the K and V of every token the sequence has seen, in position order."""

    def __init__(self, num_layers: int) -> None:
        raise NotImplementedError("lesson 04: KVCache (see README, 'Build it')")

    def update(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Append this step's k, v [num_new, num_kv_heads, head_dim] (at `positions`, the ones right
        after those cached) to layer's cache; return (all K, all V) of the layer so far, each
        [num_cached + num_new, num_kv_heads, head_dim]. Layers are independent.
        (lessons/04_kv_cache/README.md, "Build it")"""
        raise NotImplementedError("lesson 04: KVCache.update (see README, 'Build it')")


def generate_with_cache(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding with a KVCache: one prefill forward over the whole prompt (positions
    0 .. P-1) gives the first token; then each decode step runs ONE token, the last one generated,
    at its position (P, P+1, ...). Returns the max_new_tokens new ids, the same as the no-cache loop."""
    raise NotImplementedError("lesson 04: generate_with_cache (see README, 'Build it')")
