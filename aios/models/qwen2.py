"""Qwen2 / Qwen2.5 for inference: Llama's decoder (models/llama.py) with biases on q, k and v.

What differs from Llama is only the config: `qkv_bias` on (o_proj and the MLP stay bias-free),
RoPE base 1e6 as the checkpoints set it, tied embeddings in the small sizes (0.5B-3B). Qwen2.5
configs carry `sliding_window` and `max_window_layers` with `use_sliding_window: false`; the flag
decides (as in HF), and true is refused: Qwen2's window covers only the layers from
`max_window_layers` on, which aios does not implement (Mistral's every-layer window it does).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aios.config import ModelConfig
from aios.models.llama import LlamaForCausalLM, parse_rope, refuse


def parse_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """A Qwen2 config.json: the shared decoder fields, q/k/v biases, and an error for each option
    that would change the math and is not implemented."""
    refuse(path, "Qwen2", {
        "hidden_act": raw.get("hidden_act", "silu") != "silu",
        "use_sliding_window": bool(raw.get("use_sliding_window")),
        "layer_types": any(t != "full_attention" for t in raw.get("layer_types") or []),
        "dual_chunk_attention_config": bool(raw.get("dual_chunk_attention_config")),   # Qwen2.5-1M
    }, raw)
    theta, rope = parse_rope(raw, path, default_theta=10000.0)
    config = ModelConfig.from_hf({"max_position_embeddings": 32768, **raw}, path, model_type="qwen2")
    return dataclasses.replace(config, rope_theta=theta, rope_scaling=rope, qkv_bias=True)


class Qwen2ForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM built from a Qwen2 ModelConfig (qkv_bias=True): same modules, same names."""
