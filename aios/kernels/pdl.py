"""Programmatic dependent launch (PDL, Hopper and later): the next kernel starts before this one ends.

Between two kernels on one stream the GPU normally drains the first (every block done, memory
flushed) before it launches the second, and the second then ramps up: a few microseconds of an
idle GPU at every kernel boundary. A batch-1 decode step is a few hundred short kernels, so those
gaps are a large share of its time. With PDL the second kernel is launched as soon as every block of the
first has called `gdc_launch_dependents`; it may run any code that reads no output of the first,
then `gdc_wait` blocks until the first has finished and flushed its memory. The streaming gemvs
(gemv.py, fused_gemv.py) use that window to load their first tile of weights, which no kernel writes.

Invariants of every kernel launched with `launch_pdl=True` (the rules that make it race-free):
- Before `gdc_wait` it reads only data no kernel writes (weights, tables built at start-up) and
  writes nothing: its output may occupy memory the previous kernel is still reading.
- Every program calls `gdc_wait`, unconditionally, before any other load or any store: then the
  kernel cannot finish before its predecessor has, so waiting for the predecessor alone also
  covers every kernel before it (a later kernel may read what any earlier one wrote).
A kernel launched without PDL (torch's, cuBLAS's) is ordered as usual on both sides. On a CPU (the
Triton interpreter) and GPUs before Hopper, `pdl_enabled` is False and the kernels compile without
the two instructions.
"""

import functools

import torch
import triton
import triton.language as tl


@functools.cache
def _cuda_supports_pdl(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def pdl_enabled(device: torch.device) -> bool:
    """Whether kernels on `device` launch with PDL: CUDA devices of compute capability 9.0 or later."""
    if device.type != "cuda":
        return False
    return _cuda_supports_pdl(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def wait_for_previous_kernel(USE_PDL: tl.constexpr):
    """gdc_wait (the previous kernel's writes are visible after it), then let the next kernel launch."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
