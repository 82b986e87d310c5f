"""Reference for lesson 10: aios/utils/loader.py's load_model, and the shard loaders of
aios/layers/linear.py (QKVParallelLinear.weight_loader, MergedColumnParallelLinear.weight_loader,
which also pick this tensor-parallel rank's slice: lesson 14)."""

from aios.layers.linear import MergedColumnParallelLinear, QKVParallelLinear
from aios.utils.loader import load_model

qkv_weight_loader = QKVParallelLinear.weight_loader
gate_up_weight_loader = MergedColumnParallelLinear.weight_loader

__all__ = ["gate_up_weight_loader", "load_model", "qkv_weight_loader"]
