"""Continuous batching under a token budget, with chunked prefill and preemption (lesson 08).

Each step:
  1. every running sequence gets its next tokens, oldest first: one token for a decode, a
     prefill chunk for a sequence still reading its prompt; a sequence that cannot get a KV
     block preempts the newest running sequence (possibly itself): its blocks are freed and it
     goes back to the front of the waiting queue, to be recomputed later;
  2. what budget is left admits waiting sequences, first come first served, each with as large a
     prefill chunk as fits the budget and the free blocks.
One step can hold decodes and prefill chunks together, so a long prompt never stalls decodes.

Invariants:
- Each sequence is in exactly one of `waiting`, `running` (or finished and in neither).
- A scheduled sequence has slots for all of its tokens up to num_computed_tokens + its chunk.
- sum(chunk sizes) <= max_num_batched_tokens and len(scheduled) <= max_num_seqs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aios.config import Config
from aios.engine.block_manager import BlockManager
from aios.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)   # chunk size of each seq this step

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def is_pure_decode(self) -> bool:
        return all(n == 1 for n in self.num_new_tokens) and all(s.is_decode for s in self.seqs)


class Scheduler:
    def __init__(self, config: Config, block_manager: BlockManager) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.chunked_prefill = config.enable_chunked_prefill
        self.static_batching = config.static_batching
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def release(self, seq: Sequence) -> None:
        """seq takes no more steps (finished or aborted): drop it from the queues, free its blocks.

        Freeing while a launched step still writes seq's K/V is safe: any step that reuses the
        blocks is launched later on the same CUDA stream, so it runs after that write."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        # static batching (lesson 07) admits only into an empty engine: a batch runs to its end
        admit = not (self.static_batching and self.running)

        # 1. running sequences, oldest first
        i = 0
        while i < len(self.running) and budget > 0 and len(batch) < self.max_num_seqs:
            seq = self.running[i]
            remaining = len(seq) - seq.num_computed_tokens
            want = min(remaining, budget) if self.chunked_prefill or remaining == 1 else remaining
            if want > budget:
                break
            got = self.block_manager.allocate(seq, want)
            while got == 0:                  # no free block: preempt the newest running sequence
                victim = self.running[-1]
                self._preempt(victim)
                admit = False                # no new work in a step that had to preempt
                if victim is seq:
                    break
                got = self.block_manager.allocate(seq, want)
            if seq.status != SequenceStatus.RUNNING:
                continue                     # seq preempted itself; running[i] is now the next one
            batch.seqs.append(seq)
            batch.num_new_tokens.append(got)
            budget -= got
            i += 1

        # 2. admit waiting sequences with what is left
        while self.waiting and admit and budget > 0 and len(batch) < self.max_num_seqs:
            seq = self.waiting[0]
            remaining = len(seq) - seq.num_computed_tokens
            if not self.chunked_prefill and remaining > budget:
                break
            fresh = not seq.block_table
            got = self.block_manager.allocate(seq, min(remaining, budget))
            if got == 0 or (not self.chunked_prefill and seq.num_computed_tokens + got < len(seq)):
                self.block_manager.free(seq)
                break
            if fresh and self.block_manager.enable_prefix_caching:
                self.block_manager.num_prefix_queries += len(seq) - 1
                self.block_manager.num_prefix_hits += seq.num_cached_tokens
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(got)
            budget -= got
        return batch

    def postprocess(self, batch: ScheduledBatch) -> None:
        """Once the step is launched: its chunks' K/V are (being) written, in stream order."""
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n
