"""Rotary position embedding (RoPE), NeoX style as in Qwen3 (lesson 01).

The cos/sin table is computed once for every position up to max_position, in float32 exactly as
HuggingFace computes it, so positions index a table instead of recomputing trig each step.
"""

from __future__ import annotations

import torch
from torch import nn


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
