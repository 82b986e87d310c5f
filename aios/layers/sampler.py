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

from dataclasses import dataclass

import torch
from torch import nn

from aios.kernels.sampling import sample, sample_ref
from aios.layers.backend import Backend, resolve


@dataclass
class SamplingTensors:
    """Per-sequence sampling settings of one step, as device tensors ([num_seqs] each)."""

    temperatures: torch.Tensor               # float32; 0 means greedy
    top_ks: torch.Tensor | None = None       # int64; vocab_size means off
    top_ps: torch.Tensor | None = None       # float32; 1 means off
    min_ps: torch.Tensor | None = None       # float32; 0 means off
    row_keys: torch.Tensor | None = None     # int64 32-bit noise keys; None: drawn from the generator
    all_greedy: bool = False


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

    def forward(self, logits: torch.Tensor, t: SamplingTensors, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        if t.all_greedy:
            return logits.argmax(dim=-1)
        temps = t.temperatures
        keys = t.row_keys
        if keys is None:
            keys = torch.randint(0, 2**32, temps.shape, generator=generator, device=logits.device)
        if t.top_ks is not None or t.top_ps is not None or t.min_ps is not None:
            greedy = (temps == 0).unsqueeze(1)
            logits = logits.float() / torch.where(greedy, 1.0, temps.unsqueeze(1))
            logits = apply_top_k_top_p_min_p(logits, t)
            temps = (temps > 0).float()      # already scaled: greedy rows stay 0, the others 1
        return self.sample(logits, temps, keys)
