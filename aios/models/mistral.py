"""Mistral (v0.3 style) for inference: Llama's decoder (models/llama.py) with an optional sliding window.

    input_ids -> embed_tokens -> N x DecoderLayer -> norm -> lm_head (last token of each sequence)
    DecoderLayer: RMSNorm -> Attention -> (+residual) RMSNorm -> MLP -> (+residual)
    Attention:   qkv_proj -> RoPE -> paged attention (each query sees its last sliding_window tokens) -> o_proj
    MLP:         gate_up_proj -> SiLU(gate) * up -> down_proj

What differs from Qwen3 (aios/models/qwen3.py): no q/k norms, and config.json's `sliding_window`
(null in v0.3, 4096 in v0.1) applies to every layer, as in HF's MistralAttention. A window at least
`max_model_len` long can never hide a key, so those layers run full attention.
"""

from __future__ import annotations

from typing import Any

from aios.config import ModelConfig
from aios.models.llama import LlamaForCausalLM


def parse_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """A Mistral config.json: the shared decoder fields plus `sliding_window`; an error for each
    option that would change the math and is not implemented here."""
    unsupported = {
        "attention_bias": bool(raw.get("attention_bias")),
        "mlp_bias": bool(raw.get("mlp_bias")),
        "hidden_act": raw.get("hidden_act", "silu") != "silu",
        "rope_scaling": _rope_type(raw.get("rope_scaling")) not in (None, "default"),
        "rope_parameters": _rope_type(raw.get("rope_parameters")) not in (None, "default"),
    }
    for name, refused in unsupported.items():
        if refused:
            raise ValueError(f"{path}: {name}={raw[name]!r} is not supported for Mistral (it changes the math "
                             f"and aios does not implement it)")
    window = raw.get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ValueError(f"{path}: sliding_window must be a positive int or null, got {window!r}")
    config = ModelConfig.from_hf(raw, path, model_type="mistral")
    config.sliding_window = window
    return config


def _rope_type(rope: dict | None) -> str | None:
    return None if not rope else rope.get("rope_type", rope.get("type"))


class MistralForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM built from a Mistral ModelConfig (its sliding_window in every layer): same
    modules, same checkpoint names."""
