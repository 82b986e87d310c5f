"""Lesson 08: the scheduler. One step of continuous batching under a token budget: decodes first,
then prefill chunks, and preemption when the KV blocks run out.

Your `Scheduler` keeps everything of aios's but `schedule` (what runs after a step is launched,
`launched` and `postprocess`, stays aios's). Its state: self.running (a list, oldest first),
self.waiting (a deque, first come first served), self.block_manager (lesson 06's: allocate returns
how many of the asked tokens got a slot), self.max_num_batched_tokens, self.max_num_seqs, and the
helpers self._preempt(seq) (frees seq's blocks and puts it at the FRONT of waiting) and
self._free_blocks(seq).
Check: python lessons/check.py 08        Demo: python lessons/08_scheduler/run_lesson08.py --mine
"""

from __future__ import annotations

from aios.engine import scheduler
from aios.engine.scheduler import ScheduledBatch
from aios.engine.sequence import SequenceStatus  # noqa: F401 (you will need it)


class Scheduler(scheduler.Scheduler):
    def schedule(self) -> ScheduledBatch:
        """Fill one step: batch.add(seq, n) for each sequence that computes n new tokens.

        1. Running sequences, oldest first: each wants its remaining tokens, len(seq) -
           seq.num_computed_tokens (1 for a decode; a chunk of the prompt for one still
           prefilling), capped by the budget left. Ask self.block_manager.allocate(seq, want).
           While it gives 0: preempt the newest running sequence (self.running[-1]); if that was
           seq itself, move on to the next; else ask again. A step that preempted admits no one.
        2. Waiting sequences, first come first served, with what budget is left: a sequence with
           no blocks first gets its prefix-cache hits (seq.num_computed_tokens =
           seq.num_cached_tokens = self.block_manager.allocate_cached_prefix(seq); 0 here, lesson
           13 makes it more). Allocate min(remaining, budget); if nothing fits, free what it holds
           (self._free_blocks) and stop admitting. Else it leaves waiting, becomes RUNNING
           (seq.status = SequenceStatus.RUNNING), is appended to self.running and to the batch.
        Always: sum of the chunks <= self.max_num_batched_tokens, len(batch) <= self.max_num_seqs,
        and no chunk of 0 tokens. (The checks run with chunked prefill on; self.static_batching and
        self.chunked_prefill are lessons 07's and 08's switches: you may ignore them.)
        (lessons/08_scheduler/README.md, "Build it")"""
        raise NotImplementedError("lesson 08: schedule (see README, 'Build it')")
