"""RMSNorm, with the residual add fused in (lesson 05).

`forward(x)` normalizes; `forward(x, residual)` returns (norm(x + residual), x + residual), the
pair every decoder layer needs, in one pass over memory on the GPU (aios/kernels/rmsnorm.py).
"""

from __future__ import annotations

import torch
from torch import nn

from aios.kernels import fused_add_rms_norm, fused_add_rms_norm_ref, rms_norm, rms_norm_ref


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.use_triton = True                # ModelRunner: False when fused_kernels is off

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        triton = x.is_cuda and self.use_triton
        if residual is None:
            return (rms_norm if triton else rms_norm_ref)(x, self.weight, self.eps)
        return (fused_add_rms_norm if triton else fused_add_rms_norm_ref)(x, residual, self.weight, self.eps)
