"""One-row matmuls that compute their own input: the element-wise step before the matmul, done in its prologue.

At batch 1 a decoder layer's add + RMSNorm and SiLU(gate) * up each touch one row of a few thousand
elements: the kernel is over before it is up to speed, so its cost is the launch and the kernel
boundary, not the bytes. Here each is computed inside the gemv that consumes it (aios/kernels/gemv.py),
tile by tile of K, just before the tile is multiplied:

    add_rmsnorm_gemv: y = rms_norm(x + residual) @ W^T, and x + residual     (qkv_proj, gate_up_proj)
    silu_mul_gemv:    y = (silu(gate) * up) @ W^T, x = [gate | up]           (down_proj)

x `[1, K]` (`[1, 2K]` for silu_mul_gemv), W `[N, K]`, y `[1, N]`, all one dtype. The structure is
gemv's: each program owns BLOCK_N rows of W, streams K in BLOCK_K tiles with the next tile in flight,
accumulates in fp32. RMSNorm needs the whole row's sum of squares before any element is normalized,
so each program first walks x (and residual) once for it (K is 1-8k elements: a few KB, served
from L2), then normalizes each tile again as the W loop reaches it.

Invariants (tests/test_fused_gemv.py checks them):
- The input tile is rounded where the unfused kernels round (aios/kernels/rmsnorm.py: x + residual
  in the dtype, the normalized row in the dtype, then times the norm weight, rounded again;
  aios/kernels/activation.py: silu rounded, then the product rounded), so y equals the norm (or
  activation) kernel followed by gemv up to fp32 summation order and the rsqrt / exp approximations.
- The new residual goes to a fresh buffer, written by program 0 alone: every program reads x and
  residual, so no program may write over them.
- Launched with PDL on Hopper (aios/kernels/pdl.py): the first tile of W, which no kernel writes,
  loads before the wait; every program waits, unconditionally, before it reads x or writes.
- No host sync (CUDA-graph safe). Gemma's (1 + weight) norm and GeGLU are not here: Gemma 3 runs
  the unfused kernels.
"""

import torch
import triton
import triton.language as tl

from aios.kernels.activation import silu_and_mul_ref
from aios.kernels.gemv import gemv_config, gemv_ref
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel
from aios.kernels.rmsnorm import fused_add_rms_norm_ref, rms_norm_ref


def add_rmsnorm_gemv_ref(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
                         weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual) @ weight^T, x + residual); with residual None, (rms_norm(x) @ weight^T, x):
    the pair a decoder layer carries on, residual None being its first layer."""
    if residual is None:
        return gemv_ref(rms_norm_ref(x, norm_weight, eps), weight), x
    h, new_residual = fused_add_rms_norm_ref(x, residual, norm_weight, eps)
    return gemv_ref(h, weight), new_residual


def silu_mul_gemv_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """silu_and_mul(x) @ weight^T for x = [gate | up]."""
    return gemv_ref(silu_and_mul_ref(x), weight)


@triton.jit
def _residual_sum_tile(x_ptr, residual_ptr, offs_k, K, HAS_RESIDUAL: tl.constexpr):
    """The tile offs_k of x + residual, rounded to the dtype like torch's x + residual (of x alone
    without a residual): both of the norm kernel's passes read the row through it."""
    s = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + offs_k, mask=offs_k < K, other=0.0)
        s = (s.to(tl.float32) + r.to(tl.float32)).to(s.dtype)
    return s


@triton.jit
def _add_rmsnorm_gemv_kernel(x_ptr, residual_ptr, norm_w_ptr, w_ptr, y_ptr, new_residual_ptr, eps, N, K, stride_wn,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                             USE_PDL: tl.constexpr):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k = tl.arange(0, BLOCK_K)
    w = tl.load(rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0,
                eviction_policy="evict_first")                  # before the wait: weights (pdl.py)
    wait_for_previous_kernel(USE_PDL)
    # the row's sum of squares; program 0 also writes x + residual, the next layer's residual
    num_written = tl.where(pid == 0, K, 0)
    sum_sq = tl.zeros([BLOCK_K], tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        s = _residual_sum_tile(x_ptr, residual_ptr, offs_k, K, HAS_RESIDUAL)
        if HAS_RESIDUAL:
            tl.store(new_residual_ptr + offs_k, s, mask=offs_k < num_written)
        h = s.to(tl.float32)
        sum_sq += h * h
    rstd = tl.rsqrt(tl.sum(sum_sq, 0) / K + eps)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        s = _residual_sum_tile(x_ptr, residual_ptr, offs_k, K, HAS_RESIDUAL)
        g = tl.load(norm_w_ptr + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
        # rms_norm_ref's roundings: normalized row to the dtype, times the weight, to the dtype again
        xn = (g * (s.to(tl.float32) * rstd).to(s.dtype).to(tl.float32)).to(s.dtype)
        next_k = offs_k + BLOCK_K                     # the next tile of W in flight while this one is summed
        w_next = tl.load(rows + next_k[None, :], mask=mask_n[:, None] & (next_k < K)[None, :], other=0.0,
                         eviction_policy="evict_first")
        acc += w.to(tl.float32) * xn.to(tl.float32)[None, :]
        w = w_next
    y = tl.sum(acc, 1)
    tl.store(y_ptr + offs_n, y.to(y_ptr.dtype.element_ty), mask=mask_n)


@triton.jit
def _silu_mul_gemv_kernel(x_ptr, w_ptr, y_ptr, N, K, stride_wn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          USE_PDL: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k = tl.arange(0, BLOCK_K)
    w = tl.load(rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0,
                eviction_policy="evict_first")                  # before the wait: weights (pdl.py)
    wait_for_previous_kernel(USE_PDL)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        gate = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0)
        up = tl.load(x_ptr + K + offs_k, mask=offs_k < K, other=0.0)
        g = gate.to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)     # torch's silu, rounded
        a = (act * up.to(tl.float32)).to(gate.dtype)                     # the product, rounded
        next_k = offs_k + BLOCK_K
        w_next = tl.load(rows + next_k[None, :], mask=mask_n[:, None] & (next_k < K)[None, :], other=0.0,
                         eviction_policy="evict_first")
        acc += w.to(tl.float32) * a.to(tl.float32)[None, :]
        w = w_next
    y = tl.sum(acc, 1)
    tl.store(y_ptr + offs_n, y.to(y_ptr.dtype.element_ty), mask=mask_n)


def _check_one_row(x: torch.Tensor, weight: torch.Tensor, k: int) -> None:
    assert x.dim() == 2 and x.shape == (1, k) and x.dtype == weight.dtype
    assert weight.stride(1) == 1 and x.stride(1) == 1


def add_rmsnorm_gemv(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
                     weight: torch.Tensor, block_n: int | None = None, block_k: int | None = None,
                     num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of add_rmsnorm_gemv_ref for x of one row: one launch for the add, the norm and the matmul."""
    n, k = weight.shape
    _check_one_row(x, weight, k)
    assert norm_weight.shape == (k,) and norm_weight.dtype == x.dtype and norm_weight.stride(0) == 1
    if residual is not None:
        _check_one_row(residual, weight, k)
    cfg = gemv_config(n, k, x.device)
    block_n = block_n or cfg["block_n"]
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    new_residual = torch.empty_like(x) if residual is not None else x
    pdl = pdl_enabled(x.device)
    _add_rmsnorm_gemv_kernel[(triton.cdiv(n, block_n),)](
        x, residual if residual is not None else x, norm_weight, weight, y, new_residual, eps, n, k, weight.stride(0),
        BLOCK_N=block_n, BLOCK_K=block_k or cfg["block_k"], HAS_RESIDUAL=residual is not None, USE_PDL=pdl,
        num_warps=num_warps or cfg["num_warps"], launch_pdl=pdl,
    )
    return y, new_residual


def silu_mul_gemv(x: torch.Tensor, weight: torch.Tensor, block_n: int | None = None, block_k: int | None = None,
                  num_warps: int | None = None) -> torch.Tensor:
    """Triton version of silu_mul_gemv_ref for x = [gate | up] of one row: SiLU * up computed per K tile."""
    n, k = weight.shape
    _check_one_row(x, weight, 2 * k)
    cfg = gemv_config(n, k, x.device)
    block_n = block_n or cfg["block_n"]
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    pdl = pdl_enabled(x.device)
    _silu_mul_gemv_kernel[(triton.cdiv(n, block_n),)](
        x, weight, y, n, k, weight.stride(0), BLOCK_N=block_n, BLOCK_K=block_k or cfg["block_k"], USE_PDL=pdl,
        num_warps=num_warps or cfg["num_warps"], launch_pdl=pdl,
    )
    return y
