"""A sparse MoE layer's two halves (lesson 16): the router's choice, and the experts it chose.

- `select_experts`: softmax over the router logits in fp32, top-k, optionally renormalized to sum
  to 1 (`norm_topk_prob`), the weights cast back to the logits' dtype: HF's Qwen3MoeTopKRouter, op
  for op, so the same experts win (ties included: both call torch.topk on the same fp32 tensor).
  Its math is `topk_softmax_ref` (aios/kernels/topk_softmax.py), the spec of the one-launch Triton
  router `topk_softmax`, which the model binds instead on the fused-kernel path (fp32 weights).
- `FusedMoE`: the experts as two stacked parameters, gate_up_proj [E, 2 * I, H] and down_proj
  [E, H, I] (HF's in-memory layout), run by the fused Triton kernel or its reference, bound once from
  the backend (aios/kernels/fused_moe.py). The checkpoint's per-expert tensors
  (`mlp.experts.{e}.gate_proj.weight`, ...) go straight into their slices through `weight_loader`
  (aios/utils/loader.py: the model's `expert_modules_mapping`). On a GPU with a measured tile table
  for its shape (aios/kernels/moe_tiles.py) the layer holds that table and hands it to every call.
  A backend with `moe_gemm_tma` (opt-in) binds aios/kernels/fused_moe_tma.py's kernel instead.
Under TP each expert is split like the dense MLP: rank r holds columns r*I/N.. of every expert's
gate and up (column-parallel) and the same rows of its down (row-parallel); one all-reduce after.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from aios.distributed.tp_group import TPGroup
from aios.kernels.fused_moe import fused_moe, fused_moe_ref
from aios.kernels.fused_moe_tma import fused_moe_tma
from aios.kernels.moe_tiles import MoeTiles
from aios.kernels.topk_softmax import topk_softmax_ref
from aios.layers.backend import Backend, resolve


def select_experts(router_logits: torch.Tensor, top_k: int, renormalize: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(topk_weights [T, k] in the logits' dtype, topk_ids [T, k] int32) from router_logits [T, E]."""
    topk_weights, topk_ids = topk_softmax_ref(router_logits, top_k, renormalize)
    return topk_weights.to(router_logits.dtype), topk_ids                   # HF rounds the weights here


def measured_tiles(num_experts: int, intermediate_size: int, gemm: str | None = None) -> MoeTiles | None:
    """benchmarks/tune_moe.py's table for this shape and kernel (`gemm`: None, the default kernel's;
    "tma", fused_moe_tma.py's) on the GPU the layer is being built on, or None."""
    device = torch.get_default_device()
    if device.type != "cuda":
        return None
    return MoeTiles.load(num_experts, intermediate_size, torch.cuda.get_device_name(device), gemm=gemm)


class FusedMoE(nn.Module):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, tp: TPGroup | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__()
        self.tp = tp or TPGroup()
        if intermediate_size % self.tp.size:
            raise ValueError(f"moe_intermediate_size ({intermediate_size}) is not divisible by "
                             f"tensor_parallel_size ({self.tp.size})")
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size // self.tp.size            # per rank
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * self.intermediate_size, hidden_size),
                                         requires_grad=False)                # [E, 2 * I / tp, H]
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, self.intermediate_size),
                                      requires_grad=False)                   # [E, H, I / tp]
        self.gate_up_proj.weight_loader = self.weight_loader
        self.down_proj.weight_loader = self.weight_loader
        backend = resolve(backend)
        if backend.fused_kernels:
            # the grouped GEMMs' measured tiles for this shape on this GPU (aios/kernels/moe_tiles.py), if any;
            # with moe_gemm_tma (opt-in) the TMA kernel's own table where one was measured, else the same
            self.tiles = measured_tiles(num_experts, self.intermediate_size)
            kernel = fused_moe
            if backend.moe_gemm_tma:
                kernel = fused_moe_tma
                self.tiles = measured_tiles(num_experts, self.intermediate_size, gemm="tma") or self.tiles
            self.fused_moe = functools.partial(kernel, tiles=self.tiles)
        else:
            self.tiles, self.fused_moe = None, fused_moe_ref

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: int | None = None,
                      expert_id: int | None = None) -> None:
        """One expert's checkpoint matrix into its slice: shard_id 0 (gate) / 1 (up) of gate_up_proj,
        None for down_proj; this rank's columns of the intermediate dimension."""
        if expert_id is None:
            raise ValueError("expert weights load one expert at a time (mlp.experts.{e}.gate_proj.weight, ...); "
                             "a stacked [num_experts, ...] tensor in the checkpoint is not supported")
        size, rank = self.intermediate_size, self.tp.rank
        if param is self.down_proj:                                          # [H, I]: this rank's columns
            param.data[expert_id].copy_(loaded_weight.narrow(1, rank * size, size))
        else:                                                                # [I, H]: this rank's rows
            param.data[expert_id].narrow(0, shard_id * size, size).copy_(loaded_weight.narrow(0, rank * size, size))

    def forward(self, hidden_states: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor
                ) -> torch.Tensor:
        out = self.fused_moe(hidden_states, self.gate_up_proj, self.down_proj, topk_weights, topk_ids)
        return self.tp.all_reduce(out)                                       # [num_tokens, hidden_size]
