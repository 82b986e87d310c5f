"""Reference for lesson 01: aios's own Qwen3 (aios/models/qwen3.py), built on the meta device (no
memory) and counted; the KV cache's bytes from aios/engine/kv_cache.py's layout."""

from __future__ import annotations

import torch

from aios.models.registry import build_model, family_of


def count_parameters(config: dict) -> int:
    model_config = family_of(config).parse_config(config, "config.json")
    with torch.device("meta"):
        model = build_model(model_config, max_model_len=8)
    return sum(p.numel() for p in model.parameters())        # a tied matrix is one parameter


def kv_bytes_per_token(config: dict, dtype_bytes: int = 2) -> int:
    heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * heads * head_dim * dtype_bytes
