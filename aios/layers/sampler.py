"""Turn each sequence's last-token logits into its next token, on the device (lesson 12).

Sampling is Gumbel-max: token = argmax(logits / T + g) with g ~ Gumbel(0, 1) per token is a sample
from softmax(logits / T), with no softmax, no cumulative sum and no host sync; on the GPU it is one
Triton kernel that reads the logits once (aios/kernels/sampling.py). Greedy rows (temperature 0)
take argmax(logits). top-k / top-p / min-p mask the scaled logits first; they run only when some
row in the batch asks for them.

The noise of row r is a hash of (row_keys[r], token id). A seeded request's key is a hash of
(seed, output position), so it samples the same tokens whatever batch it lands in and whoever else
runs; the engine draws the other rows' keys from its own random generator. (The noise is batch-
independent; the logits are so only up to rounding: on a GPU a batch of one runs `gemv` and larger
batches cuBLAS tiles, so a near-tie between two tokens can still go either way. vLLM has the same
caveat.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aios.kernels.sampling import sample, sample_ref, seeded_row_keys
from aios.layers.backend import Backend, resolve
from aios.sampling_params import SamplingParams


@dataclass
class SamplingTensors:
    """Per-sequence sampling settings of one step, as device tensors ([num_seqs] each)."""

    temperatures: torch.Tensor               # float32; 0 means greedy
    top_ks: torch.Tensor | None = None       # int64; vocab_size means off
    top_ps: torch.Tensor | None = None       # float32; 1 means off
    min_ps: torch.Tensor | None = None       # float32; 0 means off
    row_keys: torch.Tensor | None = None     # int64 32-bit noise keys; needed unless all_greedy
    all_greedy: bool = False


def sampling_tensors(params: list[SamplingParams], output_positions: list[int], vocab_size: int,
                     rng: np.random.Generator, to_device: Callable[[np.ndarray], torch.Tensor]) -> SamplingTensors:
    """The settings of the rows that sample this step (params[i] of the row whose next token is
    output token output_positions[i]). Greedy rows ignore top-k/top-p/min-p; a mask is uploaded
    only if some row asks for it. Noise keys: a seeded request's is a hash of (seed, output
    position), so its draw is the same in any batch; the other rows' come from `rng`.
    Every value was checked by SamplingParams, and top_k >= vocab_size is off: nothing here can
    overflow or fail for one request's sake."""
    temps = np.asarray([p.temperature for p in params], dtype=np.float32)
    t = SamplingTensors(temperatures=to_device(temps), all_greedy=bool((temps == 0).all()))
    if t.all_greedy:
        return t
    sampled = temps > 0
    top_ks = np.where(sampled, [p.top_k if 0 < p.top_k < vocab_size else vocab_size for p in params],
                      vocab_size).astype(np.int64)
    top_ps = np.where(sampled, [p.top_p for p in params], 1.0).astype(np.float32)
    min_ps = np.where(sampled, [p.min_p for p in params], 0.0).astype(np.float32)
    if (top_ks < vocab_size).any():
        t.top_ks = to_device(top_ks)
    if (top_ps < 1.0).any():
        t.top_ps = to_device(top_ps)
    if (min_ps > 0.0).any():
        t.min_ps = to_device(min_ps)
    keys = rng.integers(0, 2**32, len(params), dtype=np.int64)
    seeded = [i for i, p in enumerate(params) if p.seed is not None and p.temperature > 0]
    if seeded:
        seeds = torch.tensor([params[i].seed & 0x7FFF_FFFF_FFFF_FFFF for i in seeded], dtype=torch.int64)
        positions = torch.tensor([output_positions[i] for i in seeded], dtype=torch.int64)
        keys[seeded] = seeded_row_keys(seeds, positions).numpy()
    t.row_keys = to_device(keys)
    return t


def worst_case_sampling(rows: int, device: torch.device) -> SamplingTensors:
    """Every mask on (the memory profile's sampler call: top-k/top-p sort the whole vocabulary)."""
    return SamplingTensors(temperatures=torch.ones(rows, device=device),
                           top_ks=torch.full((rows,), 50, device=device),
                           top_ps=torch.full((rows,), 0.9, device=device),
                           min_ps=torch.full((rows,), 0.05, device=device),
                           row_keys=torch.zeros(rows, dtype=torch.int64, device=device))


def apply_top_k_top_p_min_p(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Mask (to -inf) every token outside top-k, the top-p nucleus, or under min_p * p_max."""
    if t.min_ps is not None:
        probs = logits.softmax(dim=-1)
        p_max = probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < t.min_ps.unsqueeze(1) * p_max, float("-inf"))
    if t.top_ks is None and t.top_ps is None:
        return logits
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    mask = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if t.top_ks is not None:
        ranks = torch.arange(logits.shape[-1], device=logits.device).unsqueeze(0)
        mask |= ranks >= t.top_ks.unsqueeze(1)
    if t.top_ps is not None:
        probs = sorted_logits.masked_fill(mask, float("-inf")).softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs              # keep a token while the mass before it < p
        # top_p = 1 keeps everything: an fp32 cumsum can reach 1.0 before the tail and would cut it
        mask |= (mass_before >= t.top_ps.unsqueeze(1)) & (t.top_ps < 1).unsqueeze(1)
        mask[:, 0] = False                  # the most likely token always stays (a top_p of ~0 is greedy)
    sorted_logits = sorted_logits.masked_fill(mask, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_idx, sorted_logits)


class Sampler(nn.Module):
    def __init__(self, backend: Backend | None = None) -> None:
        super().__init__()
        # the Triton kernel with fused kernels (lesson 10), else its reference
        self.sample = sample if resolve(backend).fused_kernels else sample_ref

    def forward(self, logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
        if t.all_greedy:
            return logits.argmax(dim=-1)
        temps, keys = t.temperatures, t.row_keys
        assert keys is not None, "rows that sample need their noise keys (SamplingTensors.row_keys)"
        if t.top_ks is not None or t.top_ps is not None or t.min_ps is not None:
            greedy = (temps == 0).unsqueeze(1)
            logits = logits.float() / torch.where(greedy, 1.0, temps.unsqueeze(1))
            logits = apply_top_k_top_p_min_p(logits, t)
            temps = (temps > 0).float()      # already scaled: greedy rows stay 0, the others 1
        return self.sample(logits, temps, keys)
