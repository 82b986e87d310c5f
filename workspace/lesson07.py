"""Lesson 07: batching. One step's flat inputs for a batch that mixes decodes and prefill chunks.

Sequence i of the batch computes q_lens[i] new tokens on top of starts[i] tokens already in the
cache: a decode has q_len 1, a prefill chunk q_len > 1, and a later chunk of a long prompt has
starts > 0. The model sees all new tokens as one flat batch; these arrays say whose each token is.
Check: python lessons/check.py 07        Demo: python lessons/07_batching/run_lesson07.py --mine
"""

from __future__ import annotations

import numpy as np
import torch

from aios.engine.scheduler import ScheduledBatch
from aios.engine.step_inputs import StepInputs


def build_step_inputs(input_ids: np.ndarray, starts: np.ndarray, q_lens: np.ndarray, block_tables: np.ndarray,
                      logits_indices: np.ndarray, block_size: int) -> StepInputs:
    """The StepInputs of new tokens `input_ids` ([num_tokens] int64), q_lens[i] of them for sequence i.

    - cu_seqlens_q [num_seqs + 1] int32: 0, then the prefix sums of q_lens.
    - positions [num_tokens] int64: sequence i's tokens sit at starts[i], starts[i] + 1, ...
    - slot_mapping [num_tokens] int64: block_tables[i, p // block_size] * block_size + p % block_size
      for a token of sequence i at position p (lesson 06, now for the whole batch).
    - context_lens [num_seqs] int32 = starts + q_lens (the keys each sequence attends to).
    - is_prefill: any q_len > 1; max_seqlen_q, max_seqlen_k: the largest q_len and context_len.
    - block_tables and logits_indices (as int64) pass through; placeholder_dst / placeholder_src
      are empty int64 arrays. Vectorized with numpy: no Python loop over tokens.
    (lessons/07_batching/README.md, "Build it")"""
    raise NotImplementedError("lesson 07: build_step_inputs (see README, 'Build it')")


def prepare_step_inputs(batch: ScheduledBatch, block_size: int, last_row_of: dict[int, int]) -> StepInputs:
    """Flatten a scheduled batch: for each sequence seq (batch.seqs) with chunk n
    (batch.num_new_tokens), its new tokens are seq.token_ids[seq.num_computed_tokens :
    seq.num_computed_tokens + n]; block_tables [num_seqs, max blocks] int32 holds each
    seq.block_table, padded with -1; logits_indices are the flat index of the last new token of
    each sequence that samples (batch.samples[i] is True). Then build_step_inputs.

    `last_row_of` is for async scheduling (lesson 11): a token still on the device is a negative
    placeholder in token_ids. The checks run with async scheduling off, so you may ignore it."""
    raise NotImplementedError("lesson 07: prepare_step_inputs (see README, 'Build it')")


def cu_seqlens_k(context_lens: torch.Tensor) -> torch.Tensor:
    """[num_seqs + 1] int32: 0, then the prefix sums of context_lens (the Context's cu_seqlens_k:
    sequence s's keys are rows cu_seqlens_k[s] .. cu_seqlens_k[s + 1] - 1 of a flat key array)."""
    raise NotImplementedError("lesson 07: cu_seqlens_k (see README, 'Build it')")
