"""Reference for lesson 04: the teaching loop lessons/04_kv_cache/kv_cache_loop.py (GrowingKVCache,
generate_with_cache). The engine's cache is paged (lesson 06, aios/engine/kv_cache.py)."""

from __future__ import annotations

from lessons.common import load_module

_loop = load_module("04_kv_cache/kv_cache_loop.py")
KVCache = _loop.GrowingKVCache


def generate_with_cache(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    return _loop.generate_with_cache(model, prompt_ids, max_new_tokens)[0]
