"""Turn each sequence's last-token logits into its next token, on the device (lesson 12).

Sampling is Gumbel-max in its exponential-race form: token = argmax(p_i / E_i) with
E_i ~ Exp(1) is a sample from p, with no cumulative sums and no host sync. Greedy rows
(temperature 0) take argmax(logits). top-k / top-p / min-p mask the logits first; they run only
when some row in the batch asks for them.

Seeded requests draw their E_i from a counter-based hash of (seed, output position, token id),
so the same request samples the same tokens whatever batch it lands in and whoever else runs.
Unseeded requests draw from the engine's own torch.Generator (fast, one kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a 32-bit integer mix, computed in int64 and masked to 32 bits."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def seeded_exponential(seeds: torch.Tensor, positions: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Exp(1) noise [num_seqs, vocab], a pure function of (seed, position, token id)."""
    row = _hash32(_hash32(seeds ^ (seeds >> 32)) ^ _hash32(positions + 0x9E3779B9))   # [num_seqs]
    token = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    bits = _hash32(row.unsqueeze(1) * 0x01000193 + token)                               # [num_seqs, vocab]
    u = (bits.double() + 0.5) / 4294967296.0                                            # U(0, 1), open
    return (-torch.log(u)).float()


@dataclass
class SamplingTensors:
    """Per-sequence sampling settings of one step, as device tensors ([num_seqs] each)."""

    temperatures: torch.Tensor               # float32; 0 means greedy
    top_ks: torch.Tensor | None = None       # int64; vocab_size means off
    top_ps: torch.Tensor | None = None       # float32; 1 means off
    min_ps: torch.Tensor | None = None       # float32; 0 means off
    seeded_rows: torch.Tensor | None = None  # int64 [num_seeded]: rows whose request set a seed
    seeds: torch.Tensor | None = None        # int64 [num_seeded]
    positions: torch.Tensor | None = None    # int64 [num_seeded]: index of the sampled token in its output
    all_greedy: bool = False
    any_greedy: bool = True


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
        mask |= mass_before >= t.top_ps.unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(mask, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_idx, sorted_logits)


class Sampler(nn.Module):
    def forward(self, logits: torch.Tensor, t: SamplingTensors, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        if t.all_greedy:
            return logits.argmax(dim=-1)
        greedy_tokens = logits.argmax(dim=-1) if t.any_greedy else None
        temps = t.temperatures.unsqueeze(1)
        logits = logits.float() / torch.where(temps > 0, temps, torch.ones_like(temps))   # [num_seqs, vocab]
        logits = apply_top_k_top_p_min_p(logits, t)
        probs = logits.softmax(dim=-1)
        noise = torch.empty_like(probs).exponential_(generator=generator)
        if t.seeded_rows is not None:
            noise[t.seeded_rows] = seeded_exponential(t.seeds, t.positions, probs.shape[-1])
        sampled = (probs / noise).argmax(dim=-1)
        return sampled if greedy_tokens is None else torch.where(t.temperatures > 0, sampled, greedy_tokens)
