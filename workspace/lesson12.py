"""Lesson 12: sampling. Gumbel-max with temperature, the top-k / top-p / min-p masks, and seeds that
survive batching.

Given (aios's own, read them): `gumbel_noise_ref(row_keys, vocab_size)` turns each row's 32-bit key
into Gumbel(0, 1) noise [rows, vocab], a pure function of (key, token id); `seeded_row_keys(seeds,
positions)` is the key of a seeded request at an output position; `SamplingTensors` is a step's
settings as tensors (aios/layers/sampler.py). Yours: the four functions below.
Check: python lessons/check.py 12    Demo: python lessons/12_sampling/run_lesson12.py --mine
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from aios.kernels.sampling import gumbel_noise_ref, seeded_row_keys  # noqa: F401  (yours to use)
from aios.layers.backend import Backend
from aios.layers.sampler import SamplingTensors
from aios.sampling_params import SamplingParams


def sample_ref(logits: torch.Tensor, temperatures: torch.Tensor, row_keys: torch.Tensor) -> torch.Tensor:
    """One token per row by Gumbel-max: [rows, vocab] logits, [rows] fp32 temperatures, [rows] int64
    keys -> [rows] int64.

    A row with temperature 0 is greedy: exactly logits.argmax(-1) (the lowest id on a tie), no noise.
    Any other row: argmax(logits.float() / T + gumbel_noise_ref(row_keys, vocab)[row]), which is a
    draw from softmax(logits / T). Divide by T (do not multiply by 1 / T: the reference engine
    divides, and a near-tie must round the same way). -inf logits stay -inf.
    (lessons/12_sampling/README.md, "Build it: sample_ref")"""
    raise NotImplementedError("lesson 12: sample_ref (see README, 'Build it')")


def apply_top_k_top_p_min_p(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Mask (to -inf) every token of each row outside its top-k, outside its top-p nucleus, or under
    min_p * p_max; return the masked [rows, vocab] logits (the others unchanged).

    t.top_ks / t.top_ps / t.min_ps are [rows] tensors, or None when no row asks (then skip that mask).
    A row's "off" values: top_k == vocab_size, top_p == 1 (keeps every token), min_p == 0.
    min-p first: drop tokens whose probability (softmax of the row) < min_p * the row's largest
    probability. Then, over the row sorted by logit, descending: top-k keeps ranks < k; top-p
    renormalizes what top-k kept and keeps a token while the probability mass *before* it is < p,
    and always keeps the most likely token. (README, "Build it: the masks")"""
    raise NotImplementedError("lesson 12: apply_top_k_top_p_min_p (see README, 'Build it')")


def sampling_tensors(params: list[SamplingParams], output_positions: list[int], vocab_size: int,
                     rng: np.random.Generator, to_device: Callable[[np.ndarray], torch.Tensor]) -> SamplingTensors:
    """The settings of this step's sampling rows: params[i] is row i's, its next token is output
    token output_positions[i]; `to_device` turns a numpy array into a device tensor.

    temperatures: float32 [rows]. If every row is greedy (temperature 0): all_greedy=True and nothing
    else. Otherwise: top_ks / top_ps / min_ps only if some sampled row asks (a top_k of 0 or >=
    vocab_size is off: vocab_size; greedy rows always get the off values). row_keys: int64 [rows],
    drawn from rng (integers in [0, 2**32)), except that a seeded sampled row's key is
    seeded_row_keys(seed & 0x7FFF_FFFF_FFFF_FFFF, output position): the same in any batch.
    (README, "Build it: seeds")"""
    raise NotImplementedError("lesson 12: sampling_tensors (see README, 'Build it')")


class Sampler(nn.Module):
    """The engine's sampler: LLM(model, sampler=Sampler()) runs the real engine with yours."""

    def __init__(self, backend: Backend | None = None) -> None:
        super().__init__()

    def forward(self, logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
        """[rows, vocab] logits of the rows that sample this step -> [rows] int64 tokens.

        t.all_greedy: argmax. Otherwise, when any mask is set: scale each sampled row by its
        temperature first (greedy rows by 1), mask with apply_top_k_top_p_min_p (top-p and min-p
        act on the temperature-scaled distribution), then sample_ref with temperature 1 for the
        sampled rows and 0 for the greedy ones. Without masks: sample_ref(logits, temperatures,
        row_keys). (README, "Build it")"""
        raise NotImplementedError("lesson 12: Sampler.forward (see README, 'Build it')")
