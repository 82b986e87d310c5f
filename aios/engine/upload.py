"""Host arrays to the device: one step's inputs in two copies, and any other array in one.

A step's inputs (StepInputs, step_inputs.py) go up as two packs, one int64 and one int32, instead
of one copy per array; on CUDA each pack is pinned and copied without blocking the host, so the
copy is ordered on the stream before the forward that reads it.

Invariant: every array starts 16-byte aligned in its pack. Triton specializes a kernel on whether
each pointer argument is 16-byte aligned, so an offset that moved with the token count would give a
request a kernel variant the warm-up never compiled (a compile inside its TTFT; a GPU test checks
it with Triton's jit_cache_hook).
"""

from __future__ import annotations

import numpy as np
import torch

from aios.engine.step_inputs import StepInputs

# the StepInputs arrays of each pack, in pack order
PACKS = {np.int64: ("input_ids", "positions", "slot_mapping", "logits_indices", "placeholder_dst",
                    "placeholder_src", "prompt_logits_indices", "prompt_target_ids"),
         np.int32: ("block_tables", "context_lens", "cu_seqlens_q")}


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """One host array on the device (pinned and non-blocking on CUDA; the array itself on the CPU)."""
    t = torch.from_numpy(a)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def upload_step_inputs(inputs: StepInputs, device: torch.device) -> dict[str, torch.Tensor]:
    """Every array of PACKS on the device, by name, each a view into its pack, in its own shape."""
    out: dict[str, torch.Tensor] = {}
    for dtype, names in PACKS.items():
        arrays = [getattr(inputs, k) for k in names]
        per = 16 // np.dtype(dtype).itemsize
        starts = np.cumsum([0] + [-(-a.size // per) * per for a in arrays])
        host = np.zeros(starts[-1], dtype)
        for a, start in zip(arrays, starts):
            host[start:start + a.size] = a.reshape(-1)
        flat = to_device(host, device)
        for k, a, start in zip(names, arrays, starts):
            out[k] = flat[start:start + a.size].view(a.shape)
    return out
