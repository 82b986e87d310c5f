"""Scores of tokens: the logprobs of sampled tokens and of prompt tokens (issue 20; lesson 12).

What the engine reports is the model's own distribution: log_softmax of the raw logits in fp32,
before temperature, penalties or masks (vLLM's default). A scored position gives the logprob and
rank of one token (the sampled token, or the prompt's next token) and the top-N (token id, logprob)
of that position.

Where it happens in a step:
- sampled rows: `ModelRunner.run`, once the sampler has picked the tokens, from the logits the
  logits processors started from; only the rows whose request asks (`num_sample_logprobs`).
- prompt rows: `ModelRunner.execute_step`, from the hidden states of every prompt position of a
  sequence asking for prompt_logprobs (`prompt_logprob_rows` picks them per chunk), at most
  max_num_seqs rows at a time: no more memory than the sampler's rows, which the profile measured.
- both go to pinned host memory with the sampled tokens and behind the same event: the host reads
  them when it reads the tokens (with async scheduling, one step later), never before.

Invariants (tests/test_logprobs.py checks them against HF's logits):
- rank = the number of tokens whose logprob is >= the token's (vLLM's; 1 = the most likely); the
  top-N come most likely first, with ranks 1..N.
- The logits at position j score prompt token j + 1: a chunk [a, a + q) of a sequence with P prompt
  tokens scores prompt tokens a + 1 .. min(a + q, P - 1); prompt token 0 has no score (None).
- A position already scored (a preempted sequence recomputing its prompt) is not scored again
  where the host knows it; the Scheduler keeps the first score of each position (no duplicates).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from aios.sampling_params import SamplingParams

if TYPE_CHECKING:
    from aios.engine.scheduler import ScheduledBatch
    from aios.engine.sequence import Sequence


class TokenLogprobs(NamedTuple):
    """One position's scores as the host keeps them (Sequence.output_logprobs, .prompt_logprobs):
    token_ids[0] is the scored token (rank `rank`), token_ids[1:] the top-N, most likely first;
    logprobs[i] is token_ids[i]'s."""

    token_ids: list[int]
    logprobs: list[float]
    rank: int


_num_logprobs = operator.attrgetter("num_logprobs")
_prompt_logprobs = operator.attrgetter("prompt_logprobs")


def sample_logprob_rows(seqs: list[Sequence]) -> list[tuple[int, int]]:
    """(row, N) of each sampling row whose request asks for its sampled token's scores (seqs[row]
    samples row `row`); [] at C speed when none does."""
    ns = list(map(_num_logprobs, seqs))
    if ns.count(None) == len(ns):
        return []
    return [(i, n) for i, n in enumerate(ns) if n is not None]


def num_sample_logprobs(params: SamplingParams) -> int | None:
    """How many top logprobs a request's sampled rows compute (None: none, not even the token's own;
    Sequence.num_logprobs holds it).
    best_of > n ranks its samples by cumulative logprob, so it needs the sampled tokens' (N = 0)."""
    if params.logprobs is not None:
        return params.logprobs
    if params.best_of is not None and params.best_of > params.n:
        return 0
    return None


@dataclass
class LogprobsTensors:
    """Scores of `rows` positions: the scored token first, then the top-N (vLLM's layout)."""

    token_ids: torch.Tensor      # [rows, 1 + N] int64
    logprobs: torch.Tensor       # [rows, 1 + N] float32
    ranks: torch.Tensor          # [rows] int64: the scored token's rank

    @staticmethod
    def cat(parts: list[LogprobsTensors]) -> LogprobsTensors:
        if len(parts) == 1:
            return parts[0]
        return LogprobsTensors(torch.cat([p.token_ids for p in parts]), torch.cat([p.logprobs for p in parts]),
                               torch.cat([p.ranks for p in parts]))

    def to_host(self, pinned: bool) -> LogprobsTensors:
        """Copies in host memory, filled asynchronously (pinned: the caller records an event after)."""
        if not pinned:
            return self
        out = []
        for t in (self.token_ids, self.logprobs, self.ranks):
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            out.append(host)
        return LogprobsTensors(*out)

    def tolist(self) -> LogprobsLists:
        return LogprobsLists(self.token_ids.tolist(), self.logprobs.tolist(), self.ranks.tolist())


class LogprobsLists(NamedTuple):
    """LogprobsTensors read on the host (one .tolist() each)."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    ranks: list[int]

    def entry(self, row: int, num_logprobs: int) -> TokenLogprobs:
        """Row `row` with its request's own top-N (the step computed the largest N of its rows)."""
        return TokenLogprobs(self.token_ids[row][:1 + num_logprobs], self.logprobs[row][:1 + num_logprobs],
                             self.ranks[row])


def compute_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, num_logprobs: int) -> LogprobsTensors:
    """Scores of token_ids[r] and the top-`num_logprobs` tokens under row r of `logits` [rows, vocab]."""
    logprobs = logits.float().log_softmax(dim=-1)
    token_ids = token_ids.view(-1, 1)
    token_logprobs = logprobs.gather(1, token_ids)                       # [rows, 1]
    ranks = (logprobs >= token_logprobs).sum(dim=-1)
    if num_logprobs > 0:
        top = logprobs.topk(num_logprobs, dim=-1)
        token_ids = torch.cat([token_ids, top.indices], dim=1)
        token_logprobs = torch.cat([token_logprobs, top.values], dim=1)
    return LogprobsTensors(token_ids, token_logprobs, ranks)


@dataclass
class PromptLogprobRows:
    """Which hidden rows of a step score which prompt tokens (`prompt_logprob_rows`)."""

    logits_indices: np.ndarray          # [k] int64: rows of the step's flat hidden states
    target_ids: np.ndarray              # [k] int64: the prompt token each row scores
    num_logprobs: int                   # the largest prompt_logprobs of the step's requests
    spans: list[tuple[int, int, int]]   # (seq_id, first prompt token scored, count), in row order


def prompt_logprob_rows(batch: ScheduledBatch) -> PromptLogprobRows | None:
    """The rows of this step whose logits score a prompt token, or None when no sequence asks."""
    if not any(map(_prompt_logprobs, batch.seqs)):    # C speed: [] unless it asks (then [None, ...])
        return None
    indices, targets, spans, num_logprobs = [], [], [], 0
    offset = 0                                   # the chunk's first row in the step's flat tokens
    for seq, q in zip(batch.seqs, batch.num_new_tokens):
        n = seq.sampling_params.prompt_logprobs
        if n is not None:
            a = seq.num_computed_tokens
            lo = max(a, len(seq.prompt_logprobs) - 1)   # positions whose scores the host holds are skipped
            hi = min(a + q, seq.num_prompt_tokens - 1)  # position P - 1 scores the first output token
            if lo < hi:
                indices.append(np.arange(offset + lo - a, offset + hi - a, dtype=np.int64))
                targets.append(np.asarray(seq.token_ids[lo + 1: hi + 1], dtype=np.int64))
                spans.append((seq.seq_id, lo + 1, hi - lo))
                num_logprobs = max(num_logprobs, n)
        offset += q
    if not spans:
        return None
    return PromptLogprobRows(np.concatenate(indices), np.concatenate(targets), num_logprobs, spans)
