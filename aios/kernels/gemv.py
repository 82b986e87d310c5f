"""y = x @ W^T for a single row x: the matmuls of batch-1 decode, which only stream W from HBM.

At batch 1 every linear layer is a matrix-vector product: 2 FLOPs per weight element read, so
the only cost is reading W. cuBLAS's GEMM kernels reach ~1.3 TB/s on Qwen3-0.6B's 4-12 MB
matrices (launch, ramp-up and tail dominate at that size); a plain streaming kernel that gives
every SM a few rows of W gets closer to HBM speed.

x `[1, K]`, W `[N, K]` (nn.Linear's layout, K contiguous), y `[1, N]` in x's dtype.
Each program owns BLOCK_N rows of W: it walks K in BLOCK_K steps, keeps an fp32
[BLOCK_N, BLOCK_K] partial product, and reduces it once at the end.

Invariants (tests/test_kernels.py checks them): fp32 accumulation, so the result differs from
F.linear only by summation order; any N and K (masked tails); no host sync (CUDA-graph safe).
Launched with PDL on Hopper (aios/kernels/pdl.py): the first tile of W loads before the kernel
waits for the one that produced x.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from aios.kernels.device import sm_count
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel


def gemv_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain-torch spec: F.linear without bias."""
    return F.linear(x, weight)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, y_ptr, N, K, stride_wn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 USE_PDL: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k = tl.arange(0, BLOCK_K)
    # The first tile of W before the wait: no kernel writes weights (aios/kernels/pdl.py), so with
    # PDL this load overlaps the previous kernel. Each tile is read once: keep L2 for x and the KV cache.
    w = tl.load(rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0,
                eviction_policy="evict_first")
    wait_for_previous_kernel(USE_PDL)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0)
        next_k = offs_k + BLOCK_K                     # the next tile in flight while this one is summed
        w_next = tl.load(rows + next_k[None, :], mask=mask_n[:, None] & (next_k < K)[None, :], other=0.0,
                         eviction_policy="evict_first")
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        w = w_next
    y = tl.sum(acc, 1)
    tl.store(y_ptr + offs_n, y.to(y_ptr.dtype.element_ty), mask=mask_n)


def gemv_config(n: int, k: int, device: torch.device) -> dict:
    """Rows per program: enough programs for ~4 per SM, at most 16 rows; K in tiles of <= 512."""
    if device.type != "cuda":   # Triton's interpreter: every program costs milliseconds, so few of them
        return dict(block_n=16, block_k=32, num_warps=1)
    target = 4 * sm_count(device)
    block_n = 1
    while block_n < 16 and triton.cdiv(n, 2 * block_n) >= target:
        block_n *= 2
    return dict(block_n=block_n, block_k=min(512, triton.next_power_of_2(k)), num_warps=4)


def gemv(x: torch.Tensor, weight: torch.Tensor, block_n: int | None = None, block_k: int | None = None,
         num_warps: int | None = None) -> torch.Tensor:
    """Triton version of gemv_ref for x of one row (same result up to fp32 summation order)."""
    assert x.dim() == 2 and x.shape[0] == 1 and x.shape[1] == weight.shape[1] and x.dtype == weight.dtype
    assert weight.stride(1) == 1 and x.stride(1) == 1
    n, k = weight.shape
    cfg = gemv_config(n, k, x.device)
    block_n = block_n or cfg["block_n"]
    block_k = block_k or cfg["block_k"]
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    pdl = pdl_enabled(x.device)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, weight, y, n, k, weight.stride(0), BLOCK_N=block_n, BLOCK_K=block_k, USE_PDL=pdl,
        num_warps=num_warps or cfg["num_warps"], launch_pdl=pdl,
    )
    return y
