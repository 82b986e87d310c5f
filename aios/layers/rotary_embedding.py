"""Rotary position embedding (RoPE), NeoX style as in Qwen3, Llama and Qwen2 (lesson 01).

The cos/sin table is computed once for every position up to max_position, in float32 exactly as
HuggingFace computes it, so positions index a table instead of recomputing trig each step.
A model builds one table, sized by the engine's `max_model_len` (no position reaches past it), and
hands it to every layer: at the Qwen3-0.6B shape one table per layer, sized by
`max_position_embeddings`, would be 28 x 40960 x 128 floats (560 MiB).

Scaling (`rope_scaling` in a transformers 4.5x config.json, `rope_parameters` in a 5.x one; both
are one dict with a `rope_type`) changes only the inverse frequencies, exactly as HF's
ROPE_INIT_FUNCTIONS compute them: "default" none, "linear" all divided by `factor`, "llama3"
(Llama 3.1+) long wavelengths divided by `factor`, short ones kept, the band between blended.
Any other type is an error naming it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aios.kernels import rope_ref


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, base: float, rope_scaling: dict | None = None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        inv_freq = scale_inv_freq(inv_freq, rope_scaling)             # HF's ROPE_INIT_FUNCTIONS[rope_type]
        t = torch.arange(max_position, dtype=torch.int64).float()
        freqs = torch.outer(t, inv_freq)                                # [max_position, head_dim / 2]
        cos_sin_cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1)  # [max_position, head_dim]
        self.register_buffer("cos_sin_cache", cos_sin_cache, persistent=False)

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x `[num_tokens, heads, head_dim]` rotated to its positions (the torch reference)."""
        return rope_ref(x, positions, self.cos_sin_cache)


SCALED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_type(rope_scaling: dict | None) -> str:
    """The `rope_type` of a rope_scaling / rope_parameters dict (older configs spell it `type`)."""
    return (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type")) or "default"


def scale_inv_freq(inv_freq: torch.Tensor, rope_scaling: dict | None = None) -> torch.Tensor:
    """The default inverse frequencies `[head_dim / 2]` (fp32) as HF's ROPE_INIT_FUNCTIONS[rope_type]
    scales them."""
    kind = rope_type(rope_scaling)
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / _field(rope_scaling, "factor")
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, rope_scaling)
    raise ValueError(f"rope_scaling / rope_parameters rope_type {kind!r} is not supported (it changes the math "
                     f"and aios implements only {', '.join(SCALED_ROPE_TYPES)})")


def _field(rope_scaling: dict, name: str) -> float:
    if rope_scaling.get(name) is None:
        raise ValueError(f"rope_scaling / rope_parameters of rope_type {rope_type(rope_scaling)!r} lacks {name!r}")
    return rope_scaling[name]


def _llama3_inv_freq(inv_freq: torch.Tensor, rope_scaling: dict) -> torch.Tensor:
    """HF _compute_llama3_parameters: wavelengths longer than original_max / low_freq_factor are
    slowed by `factor`, those shorter than original_max / high_freq_factor kept, and the band in
    between interpolated, so positions past the pretraining context rotate like ones inside it."""
    factor = _field(rope_scaling, "factor")
    low_freq_factor = _field(rope_scaling, "low_freq_factor")
    high_freq_factor = _field(rope_scaling, "high_freq_factor")
    old_context_len = _field(rope_scaling, "original_max_position_embeddings")
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth_factor) * scaled / factor + smooth_factor * scaled
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed, scaled)
