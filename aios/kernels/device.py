"""Facts about the device a kernel launches on, for choosing grid sizes."""

import functools

import torch


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached per device); on the CPU interpreter a small
    number, so tests exercise grids of several programs."""
    if device.type != "cuda":
        return 4
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def is_hopper(device: torch.device) -> bool:
    """An sm_90 GPU (H100, H200): 227 KB of shared memory a block, where tiles measured on it fit."""
    if device.type != "cuda":
        return False
    return _cuda_capability(device.index if device.index is not None else torch.cuda.current_device())[0] == 9
