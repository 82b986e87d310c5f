"""Model shapes for benchmarks: config.json of real Qwen3 checkpoints (no weights: random at load).

Speed does not depend on weight values, so benchmarks write only config.json (and engines load
random weights: AIOS `load_format="dummy"`, vLLM `load_format="dummy"`). `--model DIR` uses a real one.
"""

from __future__ import annotations

import json
import os

_COMMON = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False, hidden_act="silu",
               rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960, torch_dtype="bfloat16",
               vocab_size=151936, bos_token_id=151643, eos_token_id=151645, head_dim=128, use_cache=True,
               use_sliding_window=False, sliding_window=None, max_window_layers=28, attention_dropout=0.0,
               initializer_range=0.02)

SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=False),
    "qwen3-14b": dict(hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40,
                      num_key_value_heads=8, tie_word_embeddings=False),
    "qwen3-32b": dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                      num_key_value_heads=8, tie_word_embeddings=False),
}


def shape_config(shape: str, **overrides) -> dict:
    """The config.json contents of a named shape (overrides replace its sizes, e.g. for a tiny test)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    return {**_COMMON, **SHAPES[shape], **overrides}


def write_shape(shape: str, root: str) -> str:
    """Write config.json (+ generation_config.json) for a named shape under root/shape; return the dir."""
    config = shape_config(shape)
    path = os.path.join(root, shape)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [151645, 151643]}, f)
    return path


def num_params(shape: str) -> int:
    c = {**_COMMON, **SHAPES[shape]}
    h, i, L, v, d = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"], c["head_dim"]
    attn = h * d * (c["num_attention_heads"] * 2 + c["num_key_value_heads"] * 2)
    per_layer = attn + 3 * h * i + 2 * h + 2 * d
    return L * per_layer + v * h * (1 if c["tie_word_embeddings"] else 2) + h
