"""One step's plan, as the scheduler hands it to the model runner (lesson 08): which sequences
compute how many new tokens, which of them sample, which fork, and which KV blocks are copied first.

Invariants (Scheduler.schedule keeps them):
- seqs, num_new_tokens, samples and forks are parallel lists, one entry per scheduled sequence.
- samples[i]: seqs[i]'s chunk reaches its last token, so it samples; a partial prefill chunk does not.
- forks[i] implies samples[i]: seqs[i] is a request's parent taking its first sample, so it samples
  one row per sample of its request (`sampled_seqs`, `logits_rows`) and `Scheduler.launched` forks.
- blocks_to_copy: (src, dst) pairs whose K/V the model runner copies before the step's forward;
  dst is a block the sequence now holds alone, src the shared one it replaced (copy-on-write).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aios.engine.sequence import Sequence


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)   # chunk size of each seq this step
    samples: list[bool] = field(default_factory=list)         # its chunk reaches its last token: it samples
    forks: list[bool] = field(default_factory=list)           # ... and it is its request's first sample:
                                                              # one row per sample of the request
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)   # (src, dst) K/V copies before
                                                              # the forward (copy-on-write)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def num_rows(self) -> int:
        """Sequences plus the extra sampled rows of forks: what max_num_seqs bounds."""
        return len(self.seqs) + sum(len(s.group.seqs) - 1 for s, f in zip(self.seqs, self.forks) if f)

    @property
    def sampled_seqs(self) -> list[Sequence]:
        """The sequences that sample a token this step, one per sampled row: each sequence whose chunk
        reaches its last token, and where that is a request's first sample, all of its samples."""
        out = []
        for seq, sample, fork in zip(self.seqs, self.samples, self.forks):
            if fork:
                out += seq.group.seqs
            elif sample:
                out.append(seq)
        return out

    def logits_rows(self) -> np.ndarray | None:
        """For each sampled row, its row among the logits of the sequences that sample (a fork
        repeats its sequence's row); None when no fork asks for a repeat."""
        if not any(self.forks):
            return None
        counts = [len(s.group.seqs) if f else 1 for s, sample, f in zip(self.seqs, self.samples, self.forks)
                  if sample]
        return np.repeat(np.arange(len(counts)), counts)

    def add(self, seq: Sequence, num_new_tokens: int) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(num_new_tokens)
        sample = seq.num_computed_tokens + num_new_tokens == len(seq)
        self.samples.append(sample)
        self.forks.append(sample and forks_here(seq))


def forks_here(seq: Sequence) -> bool:
    """seq is a request's parent whose first sample forks its other samples."""
    return seq.group is not None and not seq.group.forked
