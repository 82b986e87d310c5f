"""Which kernel runs a linear layer's matmul of a few rows: cuBLAS or skinny_gemm, timed at start-up.

skinny_gemm (aios/kernels/skinny_gemm.py) beats cuBLAS at some (layer shape, row count) pairs and
loses at others: on an H200, 2.4x on the Qwen3-0.6B shape's o_proj at 2 rows, 0.85x on the 8B's
qkv at 32 (kernels/NOTES.md, "A few rows"). A fixed rule would be wrong somewhere, and the answer
moves with the GPU, so with `Config.skinny_gemm = "auto"` the model runner asks the GPU: once at
start-up, before warm-up and graph capture, it times both kernels at each distinct weight shape
of the model's linear layers and at each decode graph's row count, and each layer then sends
skinny_gemm exactly the row counts where it was faster by MARGIN (`LinearBase.skinny_rows`).

How a matmul is timed (`graph_time_us`): as the kernel benchmarks time it (aios/utils/graph_timing.py),
64 calls replayed in one CUDA graph, so the host's launch cost, which is longer than these kernels,
is not what is measured, over enough copies of the weight to spill the L2 cache, as a decode step
reads every weight once.

Invariant: a layer's `skinny_rows` is written by its constructor (from Backend) and at most once
more, by `assign_skinny_rows` before warm-up and capture: a captured graph's kernels never change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from aios.kernels.skinny_gemm import MAX_ROWS, skinny_gemm
from aios.layers.linear import LinearBase
from aios.utils.graph_timing import bench_graph, copies_for

logger = logging.getLogger("aios")

MARGIN = 0.97              # skinny_gemm must take under 97% of cuBLAS's time: a tie stays with cuBLAS

# (kernel, m, n, k, dtype, device) -> microseconds a call of x [m, k] @ W [n, k]^T; kernel "cublas"
# (F.linear) or "skinny" (skinny_gemm)
TimeFn = Callable[[str, int, int, int, torch.dtype, torch.device], float]


def graph_time_us(kernel: str, m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> float:
    """Microseconds a call of `kernel` takes on x [m, k] and W [n, k], replayed in a CUDA graph over
    weight copies that spill the L2 (aios/utils/graph_timing.py)."""
    fn = F.linear if kernel == "cublas" else skinny_gemm
    gen = torch.Generator(device=device).manual_seed(0)
    num_copies = copies_for(n * k * torch.finfo(dtype).bits // 8)
    ws = [torch.randn(n, k, dtype=dtype, device=device, generator=gen) / k ** 0.5 for _ in range(num_copies)]
    x = torch.randn(m, k, dtype=dtype, device=device, generator=gen)
    return 1e3 * bench_graph(lambda i: (lambda: fn(x, ws[i])), num_copies)


def choose_skinny_rows(shapes: Iterable[tuple[int, int]], row_counts: Iterable[int], dtype: torch.dtype,
                       device: torch.device, time_fn: TimeFn = graph_time_us) -> dict[tuple[int, int], frozenset[int]]:
    """For each weight shape (n, k): the row counts (of row_counts, within 2 ... MAX_ROWS) at which
    skinny_gemm took under MARGIN of cuBLAS's time."""
    rows = sorted({m for m in row_counts if 2 <= m <= MAX_ROWS})
    table = {}
    for n, k in sorted(set(shapes)):
        table[(n, k)] = frozenset(m for m in rows if time_fn("skinny", m, n, k, dtype, device)
                                  < MARGIN * time_fn("cublas", m, n, k, dtype, device))
    return table


def assign_skinny_rows(model: nn.Module, row_counts: Iterable[int], dtype: torch.dtype, device: torch.device,
                       time_fn: TimeFn = graph_time_us) -> dict[tuple[int, int], frozenset[int]]:
    """Time the model's linear layers' shapes (choose_skinny_rows) and set each layer's `skinny_rows`
    to its shape's row counts; log the table, return it."""
    layers = [m for m in model.modules() if isinstance(m, LinearBase)]
    table = choose_skinny_rows((tuple(m.weight.shape) for m in layers), row_counts, dtype, device, time_fn)
    for layer in layers:
        layer.skinny_rows = table[tuple(layer.weight.shape)]
    logger.info("skinny_gemm (timed at start-up) runs: %s", "; ".join(
        f"{n}x{k}: {sorted(rows) if rows else 'none'}" for (n, k), rows in table.items()))
    return table
