"""One step's inputs, flattened on the host: token ids, positions, slot mapping, cu_seqlens (lessons 06, 07).

The scheduler hands over a batch of sequences, each with a chunk of new tokens: chunk i covers
tokens [num_computed, num_computed + num_new) of sequence i. The model wants flat arrays over all
the batch's new tokens, plus the per-sequence metadata the attention kernels need. Per-sequence
work here is slicing lists; everything per token is vectorized numpy.

Invariants:
- `slot_mapping[t]` is the cache slot of new token t: block_tables[seq, pos // block_size] *
  block_size + pos % block_size; every slot named belongs to the token's own sequence.
- `logits_indices` names the last new token of each sequence whose chunk reaches its last token
  (a partial prefill chunk samples nothing).
- `prompt_logits_indices` (empty unless a sequence asks for prompt logprobs; the model runner adds
  them after `prepare_step_inputs`, aios/layers/logprobs.py) name the hidden rows whose logits score
  a prompt token; a step that has any runs eagerly.
- A token sampled by the step still in flight (async scheduling) is a negative placeholder in
  `input_ids`; `placeholder_dst` / `placeholder_src` say where the device fills it in from.
- `blocks_to_copy` (the batch's copy-on-write pairs, set by ModelRunner.prepare_inputs) is copied
  before any of the step's K/V is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from aios.engine.scheduler import ScheduledBatch


@dataclass
class StepInputs:
    """Flat host arrays of one step: what rank 0 computes and sends to every other rank."""

    input_ids: np.ndarray          # [num_tokens] int64
    positions: np.ndarray          # [num_tokens] int64
    slot_mapping: np.ndarray       # [num_tokens] int64
    block_tables: np.ndarray       # [num_seqs, max_blocks] int32, -1 padded
    context_lens: np.ndarray       # [num_seqs] int32 (= seqlen_k)
    cu_seqlens_q: np.ndarray       # [num_seqs + 1] int32
    logits_indices: np.ndarray     # [num_sampled] int64: rows of the hidden states to sample from
    placeholder_dst: np.ndarray    # [k] int64: input positions whose token is still on the GPU ...
    placeholder_src: np.ndarray    # [k] int64: ... at this row of the previous step's sampled tokens
    is_prefill: bool
    max_seqlen_q: int
    max_seqlen_k: int
    # prompt logprobs (issue 20): rows of the hidden states that score prompt token prompt_target_ids
    prompt_logits_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # [k] int64
    prompt_target_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))       # [k] int64
    num_prompt_logprobs: int = 0                     # top-N of those rows (the step's largest N)
    prompt_logprob_spans: list[tuple[int, int, int]] = field(default_factory=list)  # rank 0's: see PromptLogprobRows
    # [k, 2] int64: (src, dst) KV blocks copied, every layer's K and V, before the forward (copy-on-write)
    blocks_to_copy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))


def prepare_step_inputs(batch: ScheduledBatch, block_size: int, last_row_of: dict[int, int]) -> StepInputs:
    """Flatten the batch. `last_row_of` maps seq_id -> row of the previous step's sampled tokens."""
    seqs = batch.seqs
    n = len(seqs)
    starts = np.fromiter((s.num_computed_tokens for s in seqs), np.int64, n)
    q_lens = np.asarray(batch.num_new_tokens, dtype=np.int64)
    input_ids = np.fromiter(chain.from_iterable(s.token_ids[a: a + q] for s, a, q in zip(seqs, starts, q_lens)),
                            np.int64, int(q_lens.sum()))
    num_blocks = np.fromiter((len(s.block_table) for s in seqs), np.int64, n)
    block_tables = np.full((n, int(num_blocks.max())), -1, dtype=np.int32)
    rows = np.repeat(np.arange(n), num_blocks)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(num_blocks) - num_blocks, num_blocks)
    block_tables[rows, cols] = np.fromiter(chain.from_iterable(s.block_table for s in seqs), np.int32, len(rows))
    # logits only for the sequences that sample: their chunk reaches their last token (batch.samples)
    logits_indices = (np.cumsum(q_lens) - 1)[np.asarray(batch.samples, dtype=bool)]
    inputs = build_step_inputs(input_ids, starts, q_lens, block_tables, logits_indices, block_size)
    dst = np.flatnonzero(input_ids < 0)             # tokens sampled by the step still in flight
    if len(dst):
        owner = np.repeat(np.arange(n), q_lens)[dst]
        try:
            inputs.placeholder_src = np.fromiter((last_row_of[seqs[i].seq_id] for i in owner), np.int64, len(dst))
        except KeyError as e:
            raise RuntimeError(f"sequence {e.args[0]} has an unresolved token the last step did not sample") from e
        inputs.placeholder_dst = dst.astype(np.int64)
    return inputs


def build_step_inputs(input_ids: np.ndarray, starts: np.ndarray, q_lens: np.ndarray, block_tables: np.ndarray,
                      logits_indices: np.ndarray, block_size: int) -> StepInputs:
    """Positions, slots and cu_seqlens of new tokens `input_ids`: q_lens[i] of them for sequence
    i, which already has starts[i] tokens in the cache."""
    num_seqs = len(q_lens)
    cu_seqlens_q = np.zeros(num_seqs + 1, dtype=np.int32)
    np.cumsum(q_lens, out=cu_seqlens_q[1:])
    seq_idx = np.repeat(np.arange(num_seqs), q_lens)                    # [num_tokens]
    positions = np.arange(len(input_ids), dtype=np.int64) - np.repeat(cu_seqlens_q[:-1] - starts, q_lens)
    block_ids = block_tables[seq_idx, positions // block_size].astype(np.int64)
    slot_mapping = block_ids * block_size + positions % block_size
    context_lens = (starts + q_lens).astype(np.int32)
    return StepInputs(input_ids=input_ids, positions=positions, slot_mapping=slot_mapping,
                      block_tables=block_tables, context_lens=context_lens, cu_seqlens_q=cu_seqlens_q,
                      logits_indices=logits_indices.astype(np.int64), placeholder_dst=np.zeros(0, np.int64),
                      placeholder_src=np.zeros(0, np.int64), is_prefill=bool((q_lens > 1).any()),
                      max_seqlen_q=int(q_lens.max()), max_seqlen_k=int(context_lens.max()))


def profile_seq_lens(max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int) -> list[int]:
    """Prompt lengths of the largest prefill step the scheduler can form: the memory profile's batch.

    The scheduler never puts more than max_num_batched_tokens tokens, more than max_num_seqs
    sequences, or a sequence longer than max_model_len into one step; the profile must not either
    (a longer dummy sequence would index past the RoPE table). Within those bounds it takes as few,
    as long sequences as it can: attention's activations grow with the length of a sequence, the
    rest with the number of tokens.
    Invariants: sum <= max_num_batched_tokens; every length in [1, max_model_len];
    len <= max_num_seqs; sum == min(max_num_batched_tokens, max_num_seqs * max_model_len)."""
    total = min(max_num_batched_tokens, max_num_seqs * max_model_len)
    seq_len = min(max_model_len, total)
    num_full, rest = divmod(total, seq_len)
    return [seq_len] * num_full + ([rest] if rest else [])


def dummy_prefill_inputs(seq_lens: list[int], blocks_per_seq: list[int], block_size: int) -> StepInputs:
    """A prefill of token 0 repeated, sequence i in blocks of its own (memory profiling, warm-up)."""
    width = max(blocks_per_seq)
    block_tables = np.full((len(seq_lens), width), -1, dtype=np.int32)
    start = 0
    for i, n in enumerate(blocks_per_seq):
        block_tables[i, :n] = np.arange(start, start + n)
        start += n
    lens = np.asarray(seq_lens, dtype=np.int64)
    return build_step_inputs(np.zeros(int(lens.sum()), np.int64), np.zeros(len(lens), np.int64), lens,
                             block_tables, np.cumsum(lens) - 1, block_size)
