"""Reference for lesson 03: aios/utils/loader.py's load_model (a tensor goes into the parameter of
its name; lesson 10 adds the fused slices), and the teaching loop lessons/03_own_the_model/
no_cache_loop.py (causal_attention, generate_no_cache)."""

from __future__ import annotations

from aios.utils.loader import load_model as load_weights  # noqa: F401
from lessons.common import load_module

_loop = load_module("03_own_the_model/no_cache_loop.py")
causal_attention = _loop.causal_attention


def generate_no_cache(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    return _loop.generate_no_cache(model, prompt_ids, max_new_tokens)[0]
