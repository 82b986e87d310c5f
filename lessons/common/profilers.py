"""Counting what a call launches: torch ops (count_kernels) and, on a GPU, kernels (count_gpu_kernels)."""

from __future__ import annotations


def count_kernels(fn, *args, **kwargs):
    """(fn's result, number of torch ops that launch a kernel). Views and empty allocations are
    free; every other aten op is one kernel launch on a GPU (what CUDA graphs and fused kernels
    save). A Triton kernel bypasses torch's dispatcher: count it yourself."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and not func.overloadpacket.__name__.startswith("empty"):
                self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with _Count() as counter:
        result = fn(*args, **kwargs)
    return result, sum(counter.ops.values())


def count_gpu_kernels(fn, *args, **kwargs):
    """(fn's result, kernels the GPU ran, kernel and graph launches the host made) for one call on a
    CUDA device, from torch's profiler (CUPTI). Unlike count_kernels it sees Triton kernels and the
    kernels inside a replayed CUDA graph; a graph replay is one host launch however many it holds."""
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # "Profiler clears events at the end of each cycle"
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            result = fn(*args, **kwargs)
            torch.cuda.synchronize()
    kernels = launches = 0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels += not event.name.startswith(("Memcpy", "Memset"))
        elif "LaunchKernel" in event.name or "GraphLaunch" in event.name:   # runtime and driver API calls
            launches += 1
    return result, kernels, launches
