"""y = x @ W^T for a few rows x (2 ... 64): the matmuls of small-batch decode, which stream W.

At batch 32 a decode step of the 8B shape still reads all 16.4 GB of weights to make 32 rows, 64
FLOPs a weight element: far from compute-bound on an H200, so the time is the streaming of W.
cuBLAS's GEMM kernels are tuned for larger M; this kernel is the one-row gemv (gemv.py) widened to
a few rows: each program owns BLOCK_N rows of W and all the rows of x (padded to BLOCK_M >= 16 for
tl.dot), walks K in BLOCK_K steps and keeps an fp32 [BLOCK_M, BLOCK_N] accumulator, so every tile
of W is read once and used for every row of x.

x `[M, K]`, W `[N, K]` (nn.Linear's layout, K contiguous), y `[M, N]` in x's dtype, 1 <= M <= 64.

Invariants (tests/test_skinny_gemm.py checks them): fp32 accumulation, so the result differs from
F.linear only by summation order; any M <= 64, N and K (masked tails); no host sync (CUDA-graph
safe). Launched with PDL on Hopper (aios/kernels/pdl.py): the first tile of W loads before the
kernel waits for the one that produced x. Opt-in (`Config.skinny_gemm`: the Linear layers send it
2 ... 64 rows); bench_kernels.py --only skinny_gemm times it against cuBLAS.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from aios.kernels.device import sm_count
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel
from aios.kernels.prefill_attention import _dot

MAX_ROWS = 64


def skinny_gemm_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain-torch spec: F.linear without bias."""
    return F.linear(x, weight)


@triton.jit
def _skinny_gemm_kernel(x_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        PRECISION: tl.constexpr, UPCAST: tl.constexpr, USE_PDL: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n, mask_m = offs_n < N, offs_m < M
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn          # [BLOCK_N, 1]
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm          # [BLOCK_M, 1]
    # The first tile of W before the wait (no kernel writes weights): with PDL it overlaps the
    # previous kernel. Each tile is read once: keep L2 for x and the KV cache.
    w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0,
                eviction_policy="evict_first")
    wait_for_previous_kernel(USE_PDL)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & (offs_k < K)[None, :], other=0.0)
        next_k = offs_k + BLOCK_K                      # the next tile of W in flight while this one is used
        w_next = tl.load(w_rows + next_k[None, :], mask=mask_n[:, None] & (next_k < K)[None, :], other=0.0,
                         eviction_policy="evict_first")
        acc += _dot(x, tl.trans(w), PRECISION, UPCAST)               # [BLOCK_M, BLOCK_N]
        w = w_next
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def skinny_gemm_config(m: int, n: int, k: int, device: torch.device) -> dict:
    """BLOCK_M: the rows padded to a power of two >= 16 (tl.dot's least). BLOCK_N: as many rows of W a
    program as still gives ~2 programs an SM, between 16 and 64. A first guess: the GPU sweep decides."""
    block_m = max(16, triton.next_power_of_2(m))
    if device.type != "cuda":   # Triton's interpreter: every program costs milliseconds, so few of them
        return dict(block_m=block_m, block_n=16, block_k=32, num_warps=4, num_stages=1)
    block_n = 16
    while block_n < 64 and triton.cdiv(n, 2 * block_n) >= 2 * sm_count(device):
        block_n *= 2
    return dict(block_m=block_m, block_n=block_n, block_k=min(256, triton.next_power_of_2(k)), num_warps=4,
                num_stages=3)


def skinny_gemm(x: torch.Tensor, weight: torch.Tensor, block_n: int | None = None, block_k: int | None = None,
                num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """Triton version of skinny_gemm_ref for x of 1 ... MAX_ROWS rows (same result up to fp32
    summation order)."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_ROWS:
        raise ValueError(f"skinny_gemm takes x of 1 ... {MAX_ROWS} rows, got shape {tuple(x.shape)}")
    if x.shape[1] != weight.shape[1] or x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} and weight {tuple(weight.shape)} {weight.dtype}: "
                         "need x's columns = weight's, one dtype, one device")
    if weight.stride(1) != 1 or x.stride(1) != 1:
        raise ValueError("skinny_gemm needs x and weight with contiguous rows (stride 1 along K)")
    m, k = x.shape
    n = weight.shape[0]
    cfg = skinny_gemm_config(m, n, k, x.device)
    block_n, block_k = block_n or cfg["block_n"], block_k or cfg["block_k"]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    pdl = pdl_enabled(x.device)
    _skinny_gemm_kernel[(triton.cdiv(n, block_n),)](
        x, weight, y, m, n, k, x.stride(0), weight.stride(0), y.stride(0),
        BLOCK_M=cfg["block_m"], BLOCK_N=block_n, BLOCK_K=block_k,
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32", UPCAST=x.device.type != "cuda", USE_PDL=pdl,
        num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"], launch_pdl=pdl,
    )
    return y
