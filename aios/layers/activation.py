"""SiLU-and-multiply: the gated MLP's activation on the fused gate_up output (lesson 10)."""

from __future__ import annotations

import torch
from torch import nn

from aios.kernels import silu_and_mul, silu_and_mul_ref


class SiluAndMul(nn.Module):
    use_triton = True                         # ModelRunner: False when fused_kernels is off

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # [N, 2 * I] -> [N, I]
        return (silu_and_mul if x.is_cuda and self.use_triton else silu_and_mul_ref)(x)
