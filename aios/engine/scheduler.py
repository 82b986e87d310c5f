"""Continuous batching under a token budget, with chunked prefill and preemption (lesson 08):
`Scheduler.schedule`, the policy that fills each step.

Each step, `schedule()` gives every running sequence its next tokens, oldest first: one token for
a decode, a prefill chunk for a sequence still reading its prompt; a sequence that cannot get a KV
block preempts the newest running sequence (possibly itself): its blocks are freed and it goes back
to the front of the waiting queue, to be recomputed later. What budget is left admits waiting
sequences, first come first served, each with as large a prefill chunk as fits the budget and the
free blocks; a sequence whose grammar is still compiling (`seq.waiting_for_grammar`, structured
outputs) is passed over, keeping its place in the queue, and the ones behind it are admitted as if
it were not there. One step can hold decodes and prefill chunks together, so a long prompt never
stalls decodes.

The rest of a request's life (launched, postprocess, abort, finish, preempt), the queues and their
invariants are request_lifecycle.py's: RequestLifecycle is Scheduler's base, and one Scheduler is
the one owner of a request's life.

Invariants of a scheduled batch:
- sum(chunk sizes) <= max_num_batched_tokens, and len plus the extra rows of its forks (best_of - 1
  each) <= max_num_seqs: no step samples more rows than max_num_seqs.
- A sequence waiting for its grammar is WAITING (its samples PENDING_FORK) and is never admitted:
  nothing is computed or sampled for a constrained row without its grammar. If the compile
  fails, `fail` finishes its request there ("error").
- A sequence whose next token would go into a block it shares (a forked prompt's last block) gets a
  fresh one first (copy-on-write, `_allocate`): the batch lists (shared, fresh) in
  `ScheduledBatch.blocks_to_copy`, which the model runner copies before the step's forward.
- A sequence added to the batch is never preempted later in the same schedule(): the first loop
  preempts only `running[-1]` while it works on `running[i]`, and everything already in the batch
  sits before i; admission preempts no one.
- Right after a prefill chunk joins the batch, the full blocks it completes enter the prefix cache
  (vLLM caches a request's full blocks as it allocates them), so a sequence admitted later in the
  same schedule hits the blocks the step is about to fill (block_manager.py says why that reads no
  unwritten slot). A decode's block waits for postprocess: with async scheduling its newest token
  is a PLACEHOLDER. The step is launched next, in the same LLMEngine.step; if the launch raises,
  `launch_failed` takes those blocks out again.
"""

from __future__ import annotations

from aios.engine.request_lifecycle import InflightStep, RequestLifecycle, StepOutput
from aios.engine.scheduled_batch import ScheduledBatch, forks_here
from aios.engine.sequence import Sequence, SequenceStatus

__all__ = ["InflightStep", "ScheduledBatch", "Scheduler", "StepOutput"]


class Scheduler(RequestLifecycle):
    """The scheduler: `schedule` here; launched, postprocess and the queues are RequestLifecycle's."""

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        rows = 0                             # sampled rows if every chunk sampled: len(batch) + fork extras
        # static batching (lesson 07) admits only into an empty engine: a batch runs to its end
        admit = not (self.static_batching and self.running)

        # 1. running sequences, oldest first
        i = 0
        while i < len(self.running) and budget > 0 and rows < self.max_num_seqs:
            seq = self.running[i]
            remaining = len(seq) - seq.num_computed_tokens
            want = min(remaining, budget) if self.chunked_prefill or remaining == 1 else remaining
            if want > budget:
                break
            seq_rows = self._rows(seq, want)
            if rows + seq_rows > self.max_num_seqs:
                i += 1                       # its fork's rows do not fit this step: it waits a step
                continue
            got = self._allocate(seq, want, batch)
            while got == 0:                  # no free block: preempt the newest running sequence
                victim = self.running[-1]
                self._preempt(victim)
                admit = False                # no new work in a step that had to preempt
                if victim is seq:
                    break
                got = self._allocate(seq, want, batch)
            if seq.status != SequenceStatus.RUNNING:
                continue                     # seq preempted itself; running[i] is now the next one
            batch.add(seq, got)
            if remaining > 1:                # a prefill chunk: the full blocks it completes are cached now
                self.block_manager.register_computed_blocks(seq, seq.num_computed_tokens + got)
            rows += self._rows(seq, got)
            budget -= got
            i += 1

        # 2. admit waiting sequences with what is left
        i = 0                                # waiting[i]: the first not passed over
        while i < len(self.waiting) and admit and budget > 0 and rows < self.max_num_seqs:
            seq = self.waiting[i]
            if seq.waiting_for_grammar:      # compiling: it keeps its place, the others go on
                i += 1
                continue
            # prefix-cache hits skip their tokens; not for a sequence still owed prompt logprobs, whose
            # every prompt position's logits must be computed (vLLM skips the cache for them too)
            looked_up = not seq.block_table and not seq.needs_prompt_logprobs
            if looked_up:
                seq.num_computed_tokens = seq.num_cached_tokens = self.block_manager.allocate_cached_prefix(seq)
            remaining = len(seq) - seq.num_computed_tokens
            if not self.chunked_prefill and remaining > budget:
                self._free_blocks(seq)
                break
            got = self._allocate(seq, min(remaining, budget), batch)
            if (got == 0 or (not self.chunked_prefill and seq.num_computed_tokens + got < len(seq))
                    or rows + self._rows(seq, got) > self.max_num_seqs):
                self._free_blocks(seq)
                break
            if self.block_manager.enable_prefix_caching and looked_up:
                self.block_manager.num_prefix_queries += len(seq) - 1
                self.block_manager.num_prefix_hits += seq.num_cached_tokens
            del self.waiting[i]
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.add(seq, got)
            self.block_manager.register_computed_blocks(seq, seq.num_computed_tokens + got)  # the next may hit
            rows += self._rows(seq, got)
            budget -= got
        return batch

    @staticmethod
    def _rows(seq: Sequence, num_new_tokens: int) -> int:
        """The batch places seq takes with a chunk of num_new_tokens: best_of where the chunk forks
        (one sampled row per sample), else 1 (whether it samples or not)."""
        if seq.num_computed_tokens + num_new_tokens == len(seq) and forks_here(seq):
            return len(seq.group.seqs)
        return 1

    def _allocate(self, seq: Sequence, num_new_tokens: int, batch: ScheduledBatch) -> int:
        """block_manager.allocate, after copy-on-write where seq's next token would go into a block
        it shares (a forked prompt's last block): seq gets a fresh block and the batch lists the
        K/V copy. 0 when no block is free for either."""
        bm = self.block_manager
        if bm.needs_copy_on_write(seq):
            if bm.num_free_blocks == 0:
                return 0
            batch.blocks_to_copy.append(bm.copy_on_write(seq))
        return bm.allocate(seq, num_new_tokens)
