"""SiLU-and-multiply (SwiGLU) and GELU(tanh)-and-multiply (GeGLU, Gemma 3): the gated MLP's
activation on the fused gate_up output (lesson 10)."""

from __future__ import annotations

import torch
from torch import nn

from aios.kernels import gelu_tanh_and_mul, gelu_tanh_and_mul_ref, silu_and_mul, silu_and_mul_ref
from aios.layers.backend import Backend, resolve


class SiluAndMul(nn.Module):
    def __init__(self, backend: Backend | None = None) -> None:
        super().__init__()
        self.silu_and_mul = silu_and_mul if resolve(backend).fused_kernels else silu_and_mul_ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # [N, 2 * I] -> [N, I]
        return self.silu_and_mul(x)


class GeluTanhAndMul(nn.Module):
    def __init__(self, backend: Backend | None = None) -> None:
        super().__init__()
        self.gelu_tanh_and_mul = gelu_tanh_and_mul if resolve(backend).fused_kernels else gelu_tanh_and_mul_ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # [N, 2 * I] -> [N, I]
        return self.gelu_tanh_and_mul(x)
