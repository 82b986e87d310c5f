"""Linear layers that know how they are split across tensor-parallel ranks (lessons 10, 14).

Each parameter carries a `weight_loader(param, loaded_weight[, shard_id])` that copies this
rank's slice of a checkpoint tensor into it, so the loader never needs to know the layout:
- ColumnParallelLinear: output features split across ranks; no communication.
- MergedColumnParallelLinear: several column-parallel matrices fused into one (gate_up_proj);
  shard_id says which of them a checkpoint tensor is.
- QKVParallelLinear: q, k, v fused into one matmul; shard_id is "q", "k" or "v". KV heads are
  split across ranks, replicated when ranks outnumber KV heads.
- RowParallelLinear: input features split; one all-reduce sums the ranks' partial outputs.
With tp.size == 1 they are plain (fused) linear layers.

With fused kernels (the backend, lesson 10) a one-row input (batch-1 decode) goes to the Triton
`gemv` kernel instead of cuBLAS: there the matmul only streams the weight, and a streaming kernel
does that faster. Two more one-row entry points run the element-wise step before the matmul inside
it (aios/kernels/fused_gemv.py), for the decoder layers that ask (their `forward_one_row`):
- `ColumnParallelLinear.forward_after_norm`: add + RMSNorm, then the matmul (qkv_proj, gate_up_proj).
  A column-parallel layer's input is the whole row on every rank, so each rank normalizes it.
- `RowParallelLinear.forward_after_silu_and_mul`: SiLU(gate) * up, then the matmul (down_proj). Its
  input is this rank's slice of gate and of up, and the activation is element-wise, so each rank
  computes its own slice; the all-reduce after is unchanged.
And one runs the element-wise step after the matmul inside it (aios/kernels/gemv_silu_and_mul.py),
for the SiLU-gated MLPs that ask (`Backend.silu_in_gemv`):
- `MergedColumnParallelLinear.forward_then_silu_and_mul`: the gate_up matmul, then SiLU(gate) * up.
  Each rank's weight is [its gate shard; its up shard] (weight_loader), so row i and row I + i of
  it are gate and up of the same feature on every rank, and the activation needs nothing from
  another rank.
A matmul of 2 ... 256 rows (a decode batch) goes where the layer's `gemm_by_rows` says: by default
nowhere, so to cuBLAS; with `Config.decode_gemm="skinny"` (opt-in) 2 ... 64 rows go to
aios/kernels/skinny_gemm.py (W's rows on the MMA's wide side, K split where SMs would idle); with
`Config.decode_gemm="auto"` (opt-in) each row count goes to whichever of cuBLAS, cuBLASLt
(aios/layers/cublaslt.py) and skinny_gemm was fastest at this layer's shape, timed at start-up
(aios/layers/gemm_choice.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from aios.distributed.tp_group import TPGroup
from aios.kernels.fused_gemv import add_rmsnorm_gemv, silu_mul_gemv
from aios.kernels.gemv import gemv
from aios.kernels.gemv_silu_and_mul import gemv_silu_and_mul
from aios.kernels.skinny_gemm import skinny_gemm
from aios.layers.backend import Backend, resolve
from aios.layers.cublaslt import cublaslt_linear

# The rows Backend.skinny_gemm sends to skinny_gemm (the kernel takes up to 256): those measured on the H200
# (kernels/NOTES.md, "A few rows")
SKINNY_ROWS = range(2, 65)
GEMMS = ("cublas", "cublaslt", "skinny")     # what a gemm_by_rows entry may name ("cublas": F.linear)


def run_gemm(gemm: str | None, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight^T through the GEMM of that name (one of GEMMS; None: cuBLAS). The one dispatch of
    the names: the layers' matmul and the start-up timing (aios/layers/gemm_choice.py) both call it."""
    if gemm == "skinny":
        return skinny_gemm(x, weight)
    if gemm == "cublaslt":
        return cublaslt_linear(x, weight)
    return F.linear(x, weight)

if TYPE_CHECKING:
    from aios.layers.layernorm import RMSNorm


def _divide(a: int, b: int, what: str) -> int:
    if a % b:
        raise ValueError(f"{what} ({a}) is not divisible by tensor_parallel_size ({b})")
    return a // b


class LinearBase(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, tp: TPGroup | None,
                 backend: Backend | None = None) -> None:
        super().__init__()
        self.tp = tp or TPGroup()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False)
            self.bias.weight_loader = self.weight_loader
        else:
            self.register_parameter("bias", None)
        self.gemv_one_row = resolve(backend).fused_kernels   # one-row inputs to the Triton gemv
        # row count -> the GEMM that runs it (one of GEMMS; a row count not in it: F.linear). SKINNY_ROWS
        # with Backend.skinny_gemm, else empty until Config.decode_gemm='auto' has the model runner time
        # the kernels (aios/layers/gemm_choice.py)
        skinny = resolve(backend).skinny_gemm
        self.gemm_by_rows: Mapping[int, str] = {m: "skinny" for m in SKINNY_ROWS} if skinny else {}

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        param.data.copy_(loaded_weight)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x @ weight^T, no bias."""
        if self.gemv_one_row and x.dim() == 2 and x.shape[0] == 1:
            return gemv(x, self.weight)
        return run_gemm(self.gemm_by_rows.get(x.shape[0]) if x.dim() == 2 else None, x, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x)
        return y if self.bias is None else y + self.bias


class ColumnParallelLinear(LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: TPGroup | None = None,
                 backend: Backend | None = None):
        tp = tp or TPGroup()
        super().__init__(in_features, _divide(out_features, tp.size, "output features"), bias, tp, backend)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        size = param.shape[0]
        param.data.copy_(loaded_weight.narrow(0, self.tp.rank * size, size))

    def forward_after_norm(self, norm: RMSNorm, x: torch.Tensor, residual: torch.Tensor | None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(self(norm(x, residual)), x + residual) for one row x, in one kernel (add_rmsnorm_gemv:
        the norm in the prologue of the gemv); residual None normalizes x alone and gives x back as
        the residual. Fused kernels only: the decoder layer asks at one row on the fused backend."""
        y, residual = add_rmsnorm_gemv(x, residual, norm.weight, norm.eps, self.weight)
        return (y if self.bias is None else y + self.bias), residual


class MergedColumnParallelLinear(ColumnParallelLinear):
    def __init__(self, in_features: int, output_sizes: list[int], bias: bool = False, tp: TPGroup | None = None,
                 backend: Backend | None = None):
        self.output_sizes = output_sizes
        super().__init__(in_features, sum(output_sizes), bias, tp, backend)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: int) -> None:
        size = self.output_sizes[shard_id] // self.tp.size
        offset = sum(self.output_sizes[:shard_id]) // self.tp.size
        param.data.narrow(0, offset, size).copy_(loaded_weight.narrow(0, self.tp.rank * size, size))

    def forward_then_silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """silu_and_mul(self(x)) for one row x of a [gate, up] layer of two equal halves, in one kernel
        (gemv_silu_and_mul: the activation in the gemv's epilogue, the bias added before it). Fused
        kernels only: the MLP asks at one row on a backend with silu_in_gemv."""
        return gemv_silu_and_mul(x, self.weight, self.bias)


class QKVParallelLinear(ColumnParallelLinear):
    def __init__(self, hidden_size: int, head_dim: int, total_num_heads: int, total_num_kv_heads: int,
                 bias: bool = False, tp: TPGroup | None = None, backend: Backend | None = None):
        tp = tp or TPGroup()
        self.head_dim = head_dim
        self.num_heads = _divide(total_num_heads, tp.size, "attention heads")
        if tp.size >= total_num_kv_heads:
            if tp.size % total_num_kv_heads:
                raise ValueError(f"tensor_parallel_size ({tp.size}) must be a multiple of the number "
                                 f"of KV heads ({total_num_kv_heads}) when it exceeds it")
            self.num_kv_heads = 1
            self.kv_rank = tp.rank // (tp.size // total_num_kv_heads)   # replicated KV heads
        else:
            self.num_kv_heads = _divide(total_num_kv_heads, tp.size, "KV heads")
            self.kv_rank = tp.rank
        out = (self.num_heads + 2 * self.num_kv_heads) * head_dim
        LinearBase.__init__(self, hidden_size, out, bias, tp, backend)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: str) -> None:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if shard_id == "q":
            offset, size, rank = 0, q_size, self.tp.rank
        elif shard_id == "k":
            offset, size, rank = q_size, kv_size, self.kv_rank
        else:
            offset, size, rank = q_size + kv_size, kv_size, self.kv_rank
        param.data.narrow(0, offset, size).copy_(loaded_weight.narrow(0, rank * size, size))


class RowParallelLinear(LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: TPGroup | None = None,
                 backend: Backend | None = None):
        tp = tp or TPGroup()
        super().__init__(_divide(in_features, tp.size, "input features"), out_features, bias, tp, backend)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        if param.dim() == 1:                 # bias: added once, after the all-reduce
            param.data.copy_(loaded_weight)
            return
        size = param.shape[1]
        param.data.copy_(loaded_weight.narrow(1, self.tp.rank * size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tp.all_reduce(self.matmul(x))
        return y if self.bias is None else y + self.bias

    def forward_after_silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """self(silu_and_mul(x)) for one row x = [gate | up], in one kernel (silu_mul_gemv: the
        activation in the prologue of the gemv). Fused kernels only, as forward_after_norm."""
        y = self.tp.all_reduce(silu_mul_gemv(x, self.weight))
        return y if self.bias is None else y + self.bias
