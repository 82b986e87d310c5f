"""Reference for lesson 14: aios's tensor-parallel linear layers (aios/layers/linear.py:
ColumnParallelLinear, RowParallelLinear; the fused QKVParallelLinear and MergedColumnParallelLinear
beside them) and the groups they all-reduce over (aios/distributed/tp_group.py, process_group.py)."""

from aios.layers.linear import ColumnParallelLinear, RowParallelLinear

__all__ = ["ColumnParallelLinear", "RowParallelLinear"]
