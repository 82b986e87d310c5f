"""y = x @ W^T for a few rows x (2 ... 256): the matmuls of small-batch decode, which stream W.

At batch 32 a decode step of the 8B shape still reads all 16.4 GB of weights to make 32 rows, 64
FLOPs a weight element: far from compute-bound on an H200, so the time is the streaming of W. Two
things make a GEMM of so few rows stream well:
- *Swap A and B.* The tensor cores' MMA has a large M side (64 rows a warpgroup on Hopper) and a
  small N side (8 ... 256). So the kernel computes y^T = W @ x^T: BLOCK_N rows of W are the MMA's M
  side and the few rows of x (padded to BLOCK_M >= 16, tl.dot's least) its N side, instead of
  padding 2 rows of x up to 64.
- *Split K where N is small.* A tile of 64 rows of W gives the 8B shape's o_proj (N = 4,096) only
  64 programs for 132 SMs. Then SPLIT_K programs share each tile's K range; each writes an fp32
  partial [M, N], and a second kernel sums the partials in a fixed order (deterministic, unlike
  atomics) and casts to x's dtype.

x `[M, K]`, W `[N, K]` (nn.Linear's layout, K contiguous), y `[M, N]` in x's dtype, 1 <= M <= 256.
Past 64 rows (a decode batch of 100-256 sequences, where cuBLAS ran the 8B shape's o_proj and
down_proj at ~41% of their roofline on the H200, BENCHMARKS.md) the same kernel runs with wider
tiles of x and fewer splits: each split's fp32 partials are M x N x 4 bytes, by then a real share
of what the kernel moves.

Invariants (tests/test_skinny_gemm.py checks them): fp32 accumulation, so the result differs from
F.linear only by summation order; any M <= 64, N, K and split count (masked tails); no host sync
(CUDA-graph safe). Launched with PDL on Hopper (aios/kernels/pdl.py): the first tile of W loads
before the kernel waits for the one that produced x. Opt-in (`Config.decode_gemm`: "skinny" sends it
2 ... 64 rows, "auto" the row counts where it was fastest at start-up); bench_kernels.py --only
skinny_gemm times it against cuBLAS and cuBLASLt.

`tma=True` runs the same program through Hopper's TMA unit (`_skinny_gemm_tma_kernel`): each tile of
W and of x is one 2-D box of a host-side tensor descriptor (`triton.tools.tensor_descriptor`,
encoded at launch and passed as a kernel parameter, as aios/kernels/fused_moe_tma.py does), so the
loads are bulk copies into shared memory with no per-thread addresses, and boxes past M or K come
back as zeros (no masks). Splits stay whole K tiles, so no box crosses into the next split's range.
It needs 16-byte aligned rows and bases (K * itemsize % 16 == 0). Measured on the H200 within a
few percent of the cp.async loads at 2-256 rows (kernels/NOTES.md, "A few rows"): the loads were
not what limited the kernel, so the engine does not use it; the benchmark keeps the comparison.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from aios.kernels.device import sm_count
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel
from aios.kernels.prefill_attention import _dot

MAX_ROWS = 256


def skinny_gemm_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain-torch spec: F.linear without bias."""
    return F.linear(x, weight)


@triton.jit
def _skinny_gemm_kernel(x_ptr, w_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om, stride_os, k_per_split,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        PRECISION: tl.constexpr, UPCAST: tl.constexpr, USE_PDL: tl.constexpr):
    """Program (n tile, k split): out[split, :M, tile] = x[:, split's K] @ W[tile, split's K]^T."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    k_lo = tl.program_id(1) * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    mask_n, mask_m = offs_n < N, offs_m < M
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn          # [BLOCK_N, 1]
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm          # [BLOCK_M, 1]
    # The first tile of W before the wait (no kernel writes weights): with PDL it overlaps the
    # previous kernel. Each tile is read once: keep L2 for x and the KV cache.
    offs_k = k_lo + tl.arange(0, BLOCK_K)
    w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < k_hi)[None, :], other=0.0,
                eviction_policy="evict_first")
    wait_for_previous_kernel(USE_PDL)
    x = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & (offs_k < k_hi)[None, :], other=0.0)
    acc = _dot(w, tl.trans(x), PRECISION, UPCAST)                      # [BLOCK_N, BLOCK_M]: y^T's tile
    for k in range(k_lo + BLOCK_K, k_hi, BLOCK_K):                     # pipelined by Triton (num_stages)
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_hi
        w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0,
                    eviction_policy="evict_first")
        x = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        acc += _dot(w, tl.trans(x), PRECISION, UPCAST)
    out = out_ptr + tl.program_id(1) * stride_os + offs_m[None, :] * stride_om + offs_n[:, None]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_m[None, :])


@triton.jit
def _skinny_gemm_tma_kernel(x_desc, w_desc, out_ptr, M, N, K, stride_om, stride_os, k_per_split,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            PRECISION: tl.constexpr, UPCAST: tl.constexpr, USE_PDL: tl.constexpr):
    """_skinny_gemm_kernel with W's [BLOCK_N, BLOCK_K] and x's [BLOCK_M, BLOCK_K] tiles loaded by TMA."""
    n0 = tl.program_id(0) * BLOCK_N
    k_lo = tl.program_id(1) * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    w = w_desc.load([n0, k_lo])                                        # before the wait, as above
    wait_for_previous_kernel(USE_PDL)
    acc = _dot(w, tl.trans(x_desc.load([0, k_lo])), PRECISION, UPCAST)
    for k in range(k_lo + BLOCK_K, k_hi, BLOCK_K):
        acc += _dot(w_desc.load([n0, k]), tl.trans(x_desc.load([0, k])), PRECISION, UPCAST)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    out = out_ptr + tl.program_id(1) * stride_os + offs_m[None, :] * stride_om + offs_n[:, None]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(offs_n < N)[:, None] & (offs_m < M)[None, :])


def tma_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """TMA's alignment: 16-byte row strides and base addresses for both operands."""
    return all(t.stride(0) * t.element_size() % 16 == 0 and t.data_ptr() % 16 == 0 for t in (x, weight))


@triton.jit
def _split_k_sum_kernel(part_ptr, y_ptr, numel, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr,
                        USE_PDL: tl.constexpr):
    """y = sum over the split axis of part [SPLIT_K, numel] (fp32, in split order), cast to y's dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    wait_for_previous_kernel(USE_PDL)
    acc = tl.zeros([BLOCK], tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + s * numel + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def skinny_gemm_config(m: int, n: int, k: int, device: torch.device) -> dict:
    """BLOCK_M: the rows padded to a power of two >= 16. BLOCK_N = 64 rows of W (one warpgroup's MMA).
    SPLIT_K: doubled while the grid holds fewer than ~2 programs an SM and each split keeps >= 4 tiles
    of K; past 64 rows also while the partials (splits x M x N fp32) stay under a quarter of W's
    bytes (K >= 8 M per split), with K tiles of 64 (a stage of 256 rows of x is 32 KB of shared memory) and,
    at 256 rows, 8 warps (the accumulator's 64 x 256 fp32 at 64 registers a thread). A first guess:
    the GPU sweep decides."""
    block_m = max(16, triton.next_power_of_2(m))
    if device.type != "cuda":   # Triton's interpreter: every program costs milliseconds, so few of them
        return dict(block_m=block_m, block_n=16, block_k=32, num_warps=4, num_stages=1, split_k=1)
    wide = m > 64
    block_n, block_k = 64, 64 if wide else 128
    tiles, split_k = triton.cdiv(n, block_n), 1
    while (tiles * split_k < 2 * sm_count(device) and k >= 2 * split_k * 4 * block_k
           and (not wide or k >= 2 * split_k * 8 * m)):
        split_k *= 2
    return dict(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=8 if block_m >= 256 else 4,
                num_stages=3 if wide else 4, split_k=split_k)


def skinny_gemm(x: torch.Tensor, weight: torch.Tensor, block_n: int | None = None, block_k: int | None = None,
                num_warps: int | None = None, num_stages: int | None = None,
                split_k: int | None = None, tma: bool = False) -> torch.Tensor:
    """Triton version of skinny_gemm_ref for x of 1 ... MAX_ROWS rows (same result up to fp32
    summation order). The keyword arguments override skinny_gemm_config (the benchmark's sweep);
    tma: load the tiles through tensor descriptors (`_skinny_gemm_tma_kernel`)."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_ROWS:
        raise ValueError(f"skinny_gemm takes x of 1 ... {MAX_ROWS} rows, got shape {tuple(x.shape)}")
    if x.shape[1] != weight.shape[1] or x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} and weight {tuple(weight.shape)} {weight.dtype}: "
                         "need x's columns = weight's, one dtype, one device")
    if weight.stride(1) != 1 or x.stride(1) != 1:
        raise ValueError("skinny_gemm needs x and weight with contiguous rows (stride 1 along K)")
    if split_k is not None and split_k < 1:
        raise ValueError(f"split_k must be >= 1, got {split_k}")
    if tma and not tma_applies(x, weight):
        raise ValueError(f"skinny_gemm(tma=True) needs 16-byte aligned rows and bases; got x strides {x.stride()}, "
                         f"weight strides {weight.stride()}, {x.dtype}")
    m, k = x.shape
    n = weight.shape[0]
    cfg = skinny_gemm_config(m, n, k, x.device)
    block_n, block_k = block_n or cfg["block_n"], block_k or cfg["block_k"]
    # Each split a whole number of K tiles; a split count that leaves the last split empty shrinks.
    k_per_split = triton.cdiv(triton.cdiv(k, split_k or cfg["split_k"]), block_k) * block_k
    splits = triton.cdiv(k, k_per_split)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    out = y if splits == 1 else torch.empty(splits, m, n, dtype=torch.float32, device=x.device)
    pdl = pdl_enabled(x.device)
    grid, block_m = (triton.cdiv(n, block_n), splits), cfg["block_m"]
    tail = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                PRECISION="ieee" if x.dtype == torch.float32 else "tf32", UPCAST=x.device.type != "cuda",
                USE_PDL=pdl, num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"],
                launch_pdl=pdl)
    if tma:
        x_desc = TensorDescriptor(x, [m, k], [x.stride(0), 1], [block_m, block_k])
        w_desc = TensorDescriptor(weight, [n, k], [weight.stride(0), 1], [block_n, block_k])
        _skinny_gemm_tma_kernel[grid](x_desc, w_desc, out, m, n, k, n, m * n, k_per_split, **tail)
    else:
        _skinny_gemm_kernel[grid](x, weight, out, m, n, k, x.stride(0), weight.stride(0), n, m * n, k_per_split,
                                  **tail)
    if splits > 1:
        block = 1024
        _split_k_sum_kernel[(triton.cdiv(m * n, block),)](out, y, m * n, SPLIT_K=splits, BLOCK=block, USE_PDL=pdl,
                                                          num_warps=4, launch_pdl=pdl)
    return y
