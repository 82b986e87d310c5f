"""Which GEMM runs a linear layer's matmul of a few rows: cuBLAS, cuBLASLt or skinny_gemm, timed at start-up.

At a decode batch's row counts (2 ... 256) no one GEMM is fastest everywhere. On an H200
(kernels/NOTES.md, "A few rows"): skinny_gemm (aios/kernels/skinny_gemm.py) takes 0.41x of cuBLAS's
time on the Qwen3-0.6B shape's o_proj at 2 rows and 2x past 96 rows; cuBLASLt (aios/layers/cublaslt.py:
the same library's other heuristics) takes 0.81x on the 8B's down_proj at 192 rows and 1.09x on its
gate_up at 256. A fixed rule would be wrong somewhere, and the answer moves with the GPU, so with
`Config.decode_gemm = "auto"` the model runner asks the GPU: once at start-up, before warm-up and
graph capture, it times each GEMM at each distinct weight shape of the model's linear layers and at
each decode graph's row count, and each layer then sends each row count to the fastest one, if that
took under MARGIN of cuBLAS's time (`LinearBase.gemm_by_rows`).

How a matmul is timed (`graph_timer`): as the kernel benchmarks time it (aios/utils/graph_timing.py),
64 calls replayed in one CUDA graph, so the host's launch cost, which is longer than these kernels,
is not what is measured, over enough copies of the weight to spill the L2 cache, as a decode step
reads every weight once.

Invariant: a layer's `gemm_by_rows` is written by its constructor (from Backend) and at most once
more, by `assign_gemms` before warm-up and capture: a captured graph's kernels never change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

from aios.kernels.skinny_gemm import MAX_ROWS
from aios.layers.linear import GEMMS, LinearBase, run_gemm
from aios.utils.graph_timing import bench_graph, copies_for

logger = logging.getLogger("aios")

MARGIN = 0.97              # another GEMM must take under 97% of cuBLAS's time: a tie stays with cuBLAS

# (gemm, m, n, k, dtype, device) -> microseconds a call of x [m, k] @ W [n, k]^T; gemm one of GEMMS
TimeFn = Callable[[str, int, int, int, torch.dtype, torch.device], float]


def graph_timer() -> TimeFn:
    """A TimeFn on the GPU: microseconds a call of `gemm` takes on x [m, k] and W [n, k], replayed in
    a CUDA graph over weight copies that spill the L2 (aios/utils/graph_timing.py). It keeps the
    copies of the last (n, k, dtype) it timed (choose_gemms times one shape at a time), no others."""
    held: dict = {}

    def time_us(gemm: str, m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> float:
        gen = torch.Generator(device=device).manual_seed(0)
        if held.get("key") != (n, k, dtype, device):
            held.clear()
            num_copies = copies_for(n * k * torch.finfo(dtype).bits // 8)
            held.update(key=(n, k, dtype, device), ws=[
                torch.randn(n, k, dtype=dtype, device=device, generator=gen) / k ** 0.5 for _ in range(num_copies)])
        ws = held["ws"]
        x = torch.randn(m, k, dtype=dtype, device=device, generator=gen)
        return 1e3 * bench_graph(lambda i: (lambda: run_gemm(gemm, x, ws[i])), len(ws))
    return time_us


def choose_gemms(shapes: Iterable[tuple[int, int]], row_counts: Iterable[int], dtype: torch.dtype,
                 device: torch.device, time_fn: TimeFn | None = None) -> dict[tuple[int, int], dict[int, str]]:
    """For each weight shape (n, k): {row count: GEMM} for the row counts (of row_counts, within
    2 ... MAX_ROWS) where the fastest GEMM was not cuBLAS and took under MARGIN of cuBLAS's time.
    time_fn: graph_timer()'s GPU clock unless given (the tests' fake one)."""
    time_fn = time_fn or graph_timer()
    rows = sorted({m for m in row_counts if 2 <= m <= MAX_ROWS})
    table = {}
    for n, k in sorted(set(shapes)):
        table[(n, k)] = {}
        for m in rows:
            times = {gemm: time_fn(gemm, m, n, k, dtype, device) for gemm in GEMMS}
            best = min(times, key=times.get)
            if times[best] < MARGIN * times["cublas"]:
                table[(n, k)][m] = best
    return table


def assign_gemms(model: nn.Module, row_counts: Iterable[int], dtype: torch.dtype, device: torch.device,
                 time_fn: TimeFn | None = None) -> dict[tuple[int, int], dict[int, str]]:
    """Time the model's linear layers' shapes (choose_gemms) and set each layer's `gemm_by_rows` to
    its shape's choices; log the table, return it."""
    layers = [m for m in model.modules() if isinstance(m, LinearBase)]
    table = choose_gemms((tuple(m.weight.shape) for m in layers), row_counts, dtype, device, time_fn)
    if device.type == "cuda":   # the timer's weight copies are freed: give their memory back to the KV cache
        torch.cuda.empty_cache()
    for layer in layers:
        layer.gemm_by_rows = table[tuple(layer.weight.shape)]
    logger.info("decode GEMMs other than cuBLAS (timed at start-up): %s", "; ".join(
        f"{n}x{k}: " + (", ".join(f"{m} rows {g}" for m, g in rows.items()) or "none")
        for (n, k), rows in table.items()))
    return table
