"""RMSNorm, with the residual add fused in (lesson 05).

`forward(x)` normalizes; `forward(x, residual)` returns (norm(x + residual), x + residual), the
pair every decoder layer needs, in one pass over memory with the fused Triton kernel
(aios/kernels/rmsnorm.py), which the backend picks at construction (lesson 10).
"""

from __future__ import annotations

import torch
from torch import nn

from aios.kernels import fused_add_rms_norm, fused_add_rms_norm_ref, rms_norm, rms_norm_ref
from aios.kernels.rmsnorm import (
    fused_add_gemma_rms_norm,
    fused_add_gemma_rms_norm_ref,
    gemma_rms_norm,
    gemma_rms_norm_ref,
)
from aios.layers.backend import Backend, resolve


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6, backend: Backend | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        fused = resolve(backend).fused_kernels
        self.rms_norm = rms_norm if fused else rms_norm_ref
        self.fused_add_rms_norm = fused_add_rms_norm if fused else fused_add_rms_norm_ref

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.rms_norm(x, self.weight, self.eps)
        return self.fused_add_rms_norm(x, residual, self.weight, self.eps)


class GemmaRMSNorm(RMSNorm):
    """Gemma 3's RMSNorm: scales by (1 + weight), the checkpoint's weight zero-centred, in fp32
    with one rounding at the end (aios/kernels/rmsnorm.py, gemma_rms_norm_ref)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, backend: Backend | None = None) -> None:
        super().__init__(hidden_size, eps, backend)
        self.weight.data.zero_()
        fused = resolve(backend).fused_kernels
        self.rms_norm = gemma_rms_norm if fused else gemma_rms_norm_ref
        self.fused_add_rms_norm = fused_add_gemma_rms_norm if fused else fused_add_gemma_rms_norm_ref
