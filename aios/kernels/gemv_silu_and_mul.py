"""silu(gate) * up of a one-row gate_up matmul, in the gemv's epilogue: the SwiGLU MLP's first half in one launch.

At batch 1 the fused gate_up projection is a gemv (aios/kernels/gemv.py) and SiLU(gate) * up is a
kernel of its own that reads a few KB: its cost is its launch and the kernel boundary. Here the
gemv applies it to its own outputs before it writes them, so a one-token MLP is two launches
(gate_up + activation, down) instead of three. Unlike fused_gemv.py's prologues nothing is done
twice: each output element is computed by exactly one program, from the two dot products it needs.

x `[1, K]`, W `[2I, K]` the merged gate_up weight as MergedColumnParallelLinear holds it (rows
[0, I) gate, rows [I, 2I) up), optional bias `[2I]` in the same layout, out `[1, I]`, one dtype.
Each program owns BLOCK_N outputs i: it streams rows i of gate and I + i of up together (two
weight tiles per K step, one x tile), with the next tiles in flight, into two fp32 accumulators.
Under tensor parallelism each rank's W is its own [gate shard; up shard] (I = intermediate / tp),
so row i and row I + i are gate and up of the same global feature on every rank.

Invariants (tests/test_gemv_silu_and_mul.py checks them):
- Rounded where the unfused path rounds (gemv then `+ bias` then aios/kernels/activation.py): the
  two matmul outputs to the dtype, each plus its bias to the dtype, silu to the dtype, the product
  to the dtype. So the output equals gemv followed by silu_and_mul bit for bit when both sum K in
  the same tiles, and the reference up to fp32 summation order and the exp approximation.
- fp32 accumulation; any I and K (masked tails); x and W are never written; no host sync (CUDA-graph safe).
- Launched with PDL on Hopper (aios/kernels/pdl.py): the first tiles of W, which no kernel writes,
  load before the wait; every program waits, unconditionally, before it reads x or writes.
- SiLU only: Gemma 3's GeGLU MLP keeps gemv + gelu_tanh_and_mul.
"""

import torch
import triton
import triton.language as tl

from aios.kernels.activation import silu_and_mul_ref
from aios.kernels.gemv import gemv_config, gemv_ref
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel


def gemv_silu_and_mul_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """silu_and_mul(x @ weight^T + bias) for weight = [gate; up]: the unfused path, op by op."""
    gate_up = gemv_ref(x, weight)
    return silu_and_mul_ref(gate_up if bias is None else gate_up + bias)


@triton.jit
def _gemv_silu_and_mul_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, intermediate, K, stride_wn, BLOCK_N: tl.constexpr,
                              BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, USE_PDL: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < intermediate
    gate_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    up_rows = w_ptr + (offs_n.to(tl.int64) + intermediate)[:, None] * stride_wn
    offs_k = tl.arange(0, BLOCK_K)
    mask = mask_n[:, None] & (offs_k < K)[None, :]
    # before the wait: weights only (pdl.py); each tile is read once, so keep L2 for x and the KV cache
    w_gate = tl.load(gate_rows + offs_k[None, :], mask=mask, other=0.0, eviction_policy="evict_first")
    w_up = tl.load(up_rows + offs_k[None, :], mask=mask, other=0.0, eviction_policy="evict_first")
    wait_for_previous_kernel(USE_PDL)
    acc_gate = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    acc_up = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)[None, :]
        next_k = offs_k + BLOCK_K                     # the next tiles in flight while these are summed
        next_mask = mask_n[:, None] & (next_k < K)[None, :]
        w_gate_next = tl.load(gate_rows + next_k[None, :], mask=next_mask, other=0.0, eviction_policy="evict_first")
        w_up_next = tl.load(up_rows + next_k[None, :], mask=next_mask, other=0.0, eviction_policy="evict_first")
        acc_gate += w_gate.to(tl.float32) * x
        acc_up += w_up.to(tl.float32) * x
        w_gate = w_gate_next
        w_up = w_up_next
    dtype = out_ptr.dtype.element_ty
    gate = tl.sum(acc_gate, 1).to(dtype)              # the matmul's outputs, rounded as gemv writes them
    up = tl.sum(acc_up, 1).to(dtype)
    if HAS_BIAS:                                      # the linear layer's `y + bias`, rounded
        bias_gate = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        bias_up = tl.load(bias_ptr + intermediate + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        gate = (gate.to(tl.float32) + bias_gate).to(dtype)
        up = (up.to(tl.float32) + bias_up).to(dtype)
    g = gate.to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)           # torch's silu, rounded
    tl.store(out_ptr + offs_n, (act * up.to(tl.float32)).to(dtype), mask=mask_n)   # the product, rounded


def gemv_silu_and_mul_config(intermediate: int, k: int, device: torch.device) -> dict:
    """gemv's tiles for the merged [2I, K] weight, each program's rows split between gate and up:
    as many programs as the plain gemv of gate_up launches, each streaming as many rows."""
    cfg = gemv_config(2 * intermediate, k, device)
    return dict(cfg, block_n=max(1, cfg["block_n"] // 2))


def gemv_silu_and_mul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      block_n: int | None = None, block_k: int | None = None,
                      num_warps: int | None = None) -> torch.Tensor:
    """Triton version of gemv_silu_and_mul_ref for x of one row: the gate_up gemv and SiLU(gate) * up in one launch."""
    two_i, k = weight.shape
    assert two_i % 2 == 0, "weight must be [gate; up], two halves of equal height"
    assert x.dim() == 2 and x.shape == (1, k) and x.dtype == weight.dtype
    assert weight.stride(1) == 1 and x.stride(1) == 1
    if bias is not None:
        assert bias.shape == (two_i,) and bias.dtype == x.dtype and bias.stride(0) == 1
    intermediate = two_i // 2
    cfg = gemv_silu_and_mul_config(intermediate, k, x.device)
    block_n = block_n or cfg["block_n"]
    out = torch.empty(1, intermediate, dtype=x.dtype, device=x.device)
    pdl = pdl_enabled(x.device)
    _gemv_silu_and_mul_kernel[(triton.cdiv(intermediate, block_n),)](
        x, weight, bias if bias is not None else weight, out, intermediate, k, weight.stride(0),
        BLOCK_N=block_n, BLOCK_K=block_k or cfg["block_k"], HAS_BIAS=bias is not None, USE_PDL=pdl,
        num_warps=num_warps or cfg["num_warps"], launch_pdl=pdl,
    )
    return out
