"""Reference for lesson 16: aios's router (`select_experts`, aios/layers/fused_moe.py) and the fused
MoE's torch reference (`fused_moe_ref`, aios/kernels/fused_moe.py), which the CPU path runs."""

from aios.kernels.fused_moe import fused_moe_ref as moe_reference
from aios.layers.fused_moe import select_experts

__all__ = ["moe_reference", "select_experts"]
