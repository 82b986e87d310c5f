"""Lesson 10: fused layers. The checkpoint stores q_proj, k_proj, v_proj (and gate_proj, up_proj) as
separate tensors; aios multiplies by ONE fused weight each (qkv_proj, gate_up_proj). The loader
writes each checkpoint tensor into its slice of the fused weight, guided by the model's
`packed_modules_mapping` ({"q_proj": ("qkv_proj", "q"), ..., "up_proj": ("gate_up_proj", 1)}).
Tensor parallelism is lesson 14: here tp.size == 1, so every slice is the whole checkpoint tensor.
Check: python lessons/check.py 10        Demo: python lessons/10_fused_layers/run_lesson10.py --mine
"""

from __future__ import annotations

import torch
from torch import nn

from aios.layers.linear import MergedColumnParallelLinear, QKVParallelLinear


def qkv_weight_loader(layer: QKVParallelLinear, param: nn.Parameter, loaded_weight: torch.Tensor,
                      shard_id: str) -> None:
    """Copy a checkpoint's q_proj ("q"), k_proj ("k") or v_proj ("v") weight into its rows of the fused
    qkv_proj `param` [(num_heads + 2 * num_kv_heads) * head_dim, hidden]: q's rows first, then k's,
    then v's (layer.num_heads, layer.num_kv_heads, layer.head_dim). In place, under no_grad.
    (lessons/10_fused_layers/README.md, "Build it")"""
    raise NotImplementedError("lesson 10: qkv_weight_loader (see README, 'Build it')")


def gate_up_weight_loader(layer: MergedColumnParallelLinear, param: nn.Parameter, loaded_weight: torch.Tensor,
                          shard_id: int) -> None:
    """Copy gate_proj (shard 0) or up_proj (shard 1) into its rows of the fused gate_up_proj `param`:
    shard i's rows start at sum(layer.output_sizes[:i]) and span layer.output_sizes[i]."""
    raise NotImplementedError("lesson 10: gate_up_weight_loader (see README, 'Build it')")


def load_model(model: nn.Module, model_dir: str) -> None:
    """Load every *.safetensors file of model_dir into model (aios/utils/loader.py's signature).

    For each tensor name (safetensors.safe_open(file, "pt").keys()): if it contains ".<key>." for a
    key of model.packed_modules_mapping, its parameter is the name with that key replaced by the
    fused module's (".q_proj." -> ".qkv_proj."), loaded with qkv_weight_loader or
    gate_up_weight_loader (yours) and the shard id; any other tensor is copied into the parameter of
    the same name (model.named_parameters(remove_duplicate=False): a tied embedding answers to two
    names). Skip "rotary_emb.inv_freq". A tensor that names no parameter, or a parameter that no
    tensor wrote, is a ValueError naming it."""
    raise NotImplementedError("lesson 10: load_model (see README, 'Build it')")
