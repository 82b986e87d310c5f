"""Lesson 14: tensor parallelism. Split a linear layer across ranks by its output features (column
parallel, no communication) or by its input features (row parallel, one all-reduce sums the ranks'
partial outputs).

`LinearBase` is aios's (aios/layers/linear.py): `LinearBase.__init__(self, in_features,
out_features, bias, tp, backend)` makes self.weight [out_features, in_features] (and self.bias
[out_features] if bias) with each parameter's `weight_loader` set to self.weight_loader, and
`self.matmul(x)` is x @ weight^T. `tp` is a TPGroup (aios/distributed/tp_group.py): tp.rank,
tp.size and tp.all_reduce(x) (in place, over the ranks' process group; a no-op at size 1).
Check: python lessons/check.py 14 (spawns a second CPU rank over gloo)
Demo:  python lessons/14_tensor_parallelism/run_lesson14.py --mine
"""

from __future__ import annotations

import torch
from torch import nn

from aios.distributed.tp_group import TPGroup
from aios.layers.backend import Backend
from aios.layers.linear import LinearBase


class ColumnParallelLinear(LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: TPGroup | None = None,
                 backend: Backend | None = None):
        """This rank holds out_features / tp.size of the output features (all the inputs): call
        LinearBase.__init__ with that many. tp None means TPGroup() (one rank). Raise ValueError if
        out_features is not divisible by tp.size. (lessons/14_tensor_parallelism/README.md,
        "Build it: column parallel")"""
        raise NotImplementedError("lesson 14: ColumnParallelLinear.__init__ (see README, 'Build it')")

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        """Copy this rank's rows of the full checkpoint tensor into param: rows
        [rank * n, (rank + 1) * n) where n = param.shape[0]. The same for the bias (1-D), whose
        entries belong to the output features."""
        raise NotImplementedError("lesson 14: ColumnParallelLinear.weight_loader (see README, 'Build it')")


class RowParallelLinear(LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: TPGroup | None = None,
                 backend: Backend | None = None):
        """This rank holds in_features / tp.size of the input features (all the outputs). Raise
        ValueError if in_features is not divisible by tp.size. (README, "Build it: row parallel")"""
        raise NotImplementedError("lesson 14: RowParallelLinear.__init__ (see README, 'Build it')")

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        """The weight: this rank's columns [rank * n, (rank + 1) * n), n = param.shape[1]. The bias
        (1-D) is not split: every rank holds all of it."""
        raise NotImplementedError("lesson 14: RowParallelLinear.weight_loader (see README, 'Build it')")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_features / tp.size] (this rank's slice of the input, what a column-parallel
        layer before it produced) -> y [..., out_features], the same on every rank: this rank's
        partial matmul, summed over the ranks by tp.all_reduce, then the bias, added once (after
        the all-reduce: before it, it would be added tp.size times)."""
        raise NotImplementedError("lesson 14: RowParallelLinear.forward (see README, 'Build it')")
