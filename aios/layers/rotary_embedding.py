"""Rotary position embedding (RoPE), NeoX style as in Qwen3 (lesson 01).

The cos/sin table is computed once for every position up to max_position, in float32 exactly as
HuggingFace computes it, so positions index a table instead of recomputing trig each step.
A model builds one table, sized by the engine's `max_model_len` (no position reaches past it), and
hands it to every layer: at the Qwen3-0.6B shape one table per layer, sized by
`max_position_embeddings`, would be 28 x 40960 x 128 floats (560 MiB).
"""

from __future__ import annotations

import torch
from torch import nn

from aios.kernels import rope_ref


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, base: float, rope_scaling: dict | None = None):
        super().__init__()
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
            raise NotImplementedError(f"rope_scaling {rope_scaling} is not supported")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        t = torch.arange(max_position, dtype=torch.int64).float()
        freqs = torch.outer(t, inv_freq)                                # [max_position, head_dim / 2]
        cos_sin_cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1)  # [max_position, head_dim]
        self.register_buffer("cos_sin_cache", cos_sin_cache, persistent=False)

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x `[num_tokens, heads, head_dim]` rotated to its positions (the torch reference)."""
        return rope_ref(x, positions, self.cos_sin_cache)
