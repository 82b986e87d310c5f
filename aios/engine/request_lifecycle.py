"""The life of every request around the schedule: the queues and states the scheduler keeps, what
happens once a step is launched, and how a request finishes. RequestLifecycle is the base of
Scheduler (scheduler.py adds `schedule`, the policy that fills each step and admits requests); one
Scheduler object is the one owner of a request's life: with `schedule`, these methods are the only
writers of a sequence's status, num_computed_tokens and token_ids (sequence.py's table).

After `schedule()` (scheduler.py):
  2. `launched(batch, handle)`, once the model runner has launched the step: each chunk's K/V is
     (being) written, so num_computed_tokens advances; each sequence that samples gets a
     PLACEHOLDER for its token in flight; one that will certainly end on "length" leaves now.
     (`launch_failed(batch)` instead, if the launch raised: the blocks schedule() entered into the
     prefix cache for the batch's chunks leave it, since their K/V will never be written.)
  3. `postprocess(step, token_ids)`, once the host has the step's tokens (with async scheduling,
     one step later): placeholders become tokens (and their scores, where asked, are stored beside
     them), a constrained sequence's grammar accepts its token, stops are checked, the full blocks
     not in the prefix cache yet (those decodes filled; prefill chunks' blocks entered it at
     schedule time) enter it, finished sequences free their blocks and become FINISHED.
Between steps: `abort` (the caller's), `fail` (a request whose grammar failed to compile).

Invariants (check_invariants() asserts them; the stress tests call it after every step):
- Each unfinished sequence is in exactly one of `waiting` (WAITING), `running` (RUNNING), or
  `finishing` (FINISHING: released at launch, its last token still in flight).
- A RUNNING sequence has KV slots for every token before num_computed_tokens; a WAITING or
  FINISHING one holds no block.
- A block's ref_count = the number of sequences (running ones: the others hold none) whose
  block_table holds it.
- A PENDING_FORK sequence is in no queue and holds no block; its group's parent is WAITING or
  RUNNING and the group is not forked.

Several samples of one prompt (n, best_of; a SequenceGroup, sequence.py): only the parent is queued.
The step whose chunk reaches its prompt's last token samples best_of rows from its one logits row
(`ScheduledBatch.forks`, `sampled_seqs`), and `launched` forks the others from it (`_fork`: the
parent's tokens, num_computed_tokens and every block, ref counts + 1). The last, partly filled
prompt block is then shared by all samples, and the first token each one writes would land in it:
copy-on-write (`Scheduler._allocate`) gives each writer but the last a fresh block. From the fork
on, a sample is an ordinary sequence: preempting it frees its references only, and it is
recomputed from its own tokens (the prefix cache may hit the shared prompt). An abort of any sample
aborts the request: all of them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aios.config import Config
from aios.engine.block_manager import BlockManager
from aios.engine.scheduled_batch import ScheduledBatch
from aios.engine.sequence import PLACEHOLDER, Sequence, SequenceStatus
from aios.engine.stop_checker import StopChecker

if TYPE_CHECKING:
    from aios.engine.step_handle import StepHandle

logger = logging.getLogger("aios")


@dataclass
class InflightStep:
    """A launched step whose sampled tokens the host has not read yet."""

    batch: ScheduledBatch
    handle: StepHandle | None                 # handle.tokens() waits for them (set once sampling is launched)
    sampled: list[Sequence]                   # batch.sampled_seqs, one per token
    token_indices: list[int]                  # where each one's PLACEHOLDER sits in its token_ids


@dataclass
class StepOutput:
    seq: Sequence
    new_token_ids: list[int]
    finished: bool


class RequestLifecycle:
    """Scheduler's state (its queues, its settings, its counters) and every change of a request's
    state but admission, which is `Scheduler.schedule`'s."""

    def __init__(self, config: Config, block_manager: BlockManager, stop_checker: StopChecker) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.chunked_prefill = config.enable_chunked_prefill
        self.static_batching = config.static_batching
        self.block_manager = block_manager
        self.stop_checker = stop_checker
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.finishing: set[Sequence] = set()
        self.num_preemptions = 0
        self.num_generated_tokens = 0
        # prompt tokens whose K/V a launched step computes (prefix-cache hits and forked samples
        # compute none; a preempted sequence's recompute counts again)
        self.num_computed_prompt_tokens = 0
        self.num_forked_seqs = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        """Anything to schedule (a FINISHING sequence needs no more steps)."""
        return bool(self.waiting or self.running)

    # ---- 2. launched ---------------------------------------------------------------------------

    def launched(self, batch: ScheduledBatch, handle: StepHandle) -> InflightStep:
        """The model runner has launched `batch`: its K/V is written in stream order from here on."""
        for seq, n, fork in zip(batch.seqs, batch.num_new_tokens, batch.forks):
            self.num_computed_prompt_tokens += max(0, min(n, seq.num_prompt_tokens - seq.num_computed_tokens))
            seq.num_computed_tokens += n
            if fork:
                self._fork(seq)
        sampled = batch.sampled_seqs
        indices = []
        for seq in sampled:
            indices.append(len(seq.token_ids))
            seq.token_ids.append(PLACEHOLDER)
            if self.stop_checker.finishes_at_launch(seq):
                # ends on "length" whatever the token: free its blocks now, not one step later
                self.block_manager.register_computed_blocks(seq)
                self._release(seq)
                seq.status = SequenceStatus.FINISHING
                self.finishing.add(seq)
        return InflightStep(batch, handle, sampled, indices)

    def launch_failed(self, batch: ScheduledBatch) -> None:
        """Launching `batch` raised. A chunk that `launched` never saw does not run, so the blocks
        schedule() registered for it leave the prefix cache (their K/V will never be written); a
        chunk already launched keeps them (num_computed_tokens has moved past them). The batch's
        sequences are the caller's to abort (LLM.generate and the server's EngineLoop do): one
        admitted onto such a block counts as computed tokens that are not."""
        for seq in batch.seqs:
            if seq.status == SequenceStatus.RUNNING:
                self.block_manager.unregister_uncomputed_blocks(seq)

    def _fork(self, parent: Sequence) -> None:
        """The parent's first token is launched: its request's other samples start from its state,
        sharing its blocks (one prefill for them all). Each gets its own placeholder in launched."""
        group = parent.group
        children = group.seqs[1:]
        for child in children:
            assert child.status == SequenceStatus.PENDING_FORK and child.token_ids == parent.token_ids
            child.num_computed_tokens = parent.num_computed_tokens
            child.num_cached_tokens = parent.num_cached_tokens
            child.prompt_logprobs = parent.prompt_logprobs     # one list: the prefill scores it once
            self.block_manager.fork(parent, child)
            child.status = SequenceStatus.RUNNING
            self.running.append(child)
        group.forked = True
        self.num_forked_seqs += len(children)

    # ---- 3. postprocess ------------------------------------------------------------------------

    def postprocess(self, step: InflightStep, token_ids: list[int]) -> list[StepOutput]:
        """The step's sampled tokens are known: append them, stop, register, free, finish."""
        now = time.perf_counter()
        live = [(seq, idx, t) for seq, idx, t in zip(step.sampled, step.token_indices, token_ids)
                if not seq.is_finished]           # aborted, or stopped at an earlier token
        for seq, idx, token_id in live:           # first every placeholder, so that an error in a
            seq.token_ids[idx] = token_id         # stop check below leaves no sequence half-known
        self._record_logprobs(step, live)
        outputs = []
        for seq, idx, token_id in live:
            seq.record_token_time(now)
            self.num_generated_tokens += 1
            try:
                if seq.grammar is not None:
                    seq.grammar.accept(token_id)      # before the stop check: the grammar may end here
                stop = self.stop_checker.check(seq, idx)
                if stop is None and seq.grammar is not None and seq.grammar.is_terminated:
                    stop = ("stop", None)             # the constraint is complete (EOS under ignore_eos)
            except Exception as e:            # this request's own failure: it alone finishes, with "error"
                logger.exception("the stop check of sequence %d failed", seq.seq_id)
                seq.error = f"{type(e).__name__}: {e}"
                stop = ("error", None)
            if stop is not None:
                del seq.token_ids[idx + 1:]       # a token sampled after the stop is dropped
                del seq.output_logprobs[idx + 1 - seq.num_prompt_tokens:]
                seq.stop_reason = stop[1]
                self._finish(seq, stop[0])
            outputs.append(StepOutput(seq, [token_id], stop is not None))
        # every token before num_computed_tokens is known now: register the full blocks not cached yet
        # (those decodes filled; a prefill chunk's entered the cache as it was scheduled).
        # A forked parent's samples hold its prompt blocks (forked at this launch or, with async
        # scheduling, the next): they register with it, so each holder of a cached block has its hash.
        for seq in step.batch.seqs:
            group = seq.group
            for s in group.seqs if group is not None and group.forked and seq is group.parent else [seq]:
                if s.block_table:
                    self.block_manager.register_computed_blocks(s)
        return outputs

    def _record_logprobs(self, step: InflightStep, live: list[tuple[Sequence, int, int]]) -> None:
        """Store the step's scores beside the tokens they score (Sequence.output_logprobs /
        prompt_logprobs): each position's first score only, so a recomputed prompt adds none twice."""
        handle = step.handle
        if handle is None or (handle.logprobs is None and handle.prompt_logprobs is None):
            return
        sample, prompt = handle.read_logprobs()
        if sample is not None:
            for seq, idx, _ in live:
                row = handle.logprob_row_of.get(seq.seq_id)
                if row is not None and len(seq.output_logprobs) == idx - seq.num_prompt_tokens:
                    seq.output_logprobs.append(sample.entry(row, seq.num_logprobs))
        if prompt is not None:
            by_id = {seq.seq_id: seq for seq in step.batch.seqs}
            row = 0
            for seq_id, first, count in handle.prompt_logprob_spans:
                seq = by_id[seq_id]
                if not seq.is_finished and len(seq.prompt_logprobs) >= first:
                    n = seq.sampling_params.prompt_logprobs
                    for k in range(len(seq.prompt_logprobs) - first, count):   # positions not scored yet
                        seq.prompt_logprobs.append(prompt.entry(row + k, n))
                row += count

    def abort(self, seq: Sequence) -> None:
        """seq's request takes no more steps (seq and, for a request of several samples, all of
        them); each keeps only its known tokens (finish_reason "abort")."""
        for s in seq.group.seqs if seq.group is not None else [seq]:
            if not s.is_finished:
                del s.token_ids[s.num_prompt_tokens + s.num_known_output_tokens:]   # tokens in flight
                self._finish(s, "abort", register=False)

    def fail(self, seq: Sequence, error: str) -> list[StepOutput]:
        """Finish seq's request before it ran (its grammar failed to compile), every sample with
        finish_reason "error" and `error`; returns their outputs."""
        outputs = []
        for s in seq.group.seqs if seq.group is not None else [seq]:
            s.error = error
            self._finish(s, "error", register=False)
            outputs.append(StepOutput(s, [], True))
        return outputs

    # ---- state changes (the only writers of status and of num_computed_tokens after admission) ----

    def _finish(self, seq: Sequence, reason: str, register: bool = True) -> None:
        if register:
            self.block_manager.register_computed_blocks(seq)    # before its blocks are freed
        self._release(seq)
        self.finishing.discard(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def _release(self, seq: Sequence) -> None:
        """Drop seq from its queue and free its blocks. Freeing while a launched step still writes
        them is safe: any step that reuses the blocks is launched later on the same CUDA stream, so
        it runs after that write."""
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status == SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self._free_blocks(seq)

    def _free_blocks(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._free_blocks(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def check_invariants(self) -> None:
        """Assert the invariants in this module's docstring (tests call it after every step)."""
        queues = {SequenceStatus.WAITING: list(self.waiting), SequenceStatus.RUNNING: self.running,
                  SequenceStatus.FINISHING: list(self.finishing)}
        seen: set[int] = set()
        for status, seqs in queues.items():
            for seq in seqs:
                assert seq.status == status, f"sequence {seq.seq_id} is {seq.status} in the {status} queue"
                assert id(seq) not in seen, f"sequence {seq.seq_id} is in two queues"
                seen.add(id(seq))
                if status == SequenceStatus.RUNNING:
                    slots = len(seq.block_table) * self.block_manager.block_size
                    assert slots >= seq.num_computed_tokens, f"sequence {seq.seq_id} computed past its slots"
                else:
                    assert not seq.block_table, f"sequence {seq.seq_id} ({status}) holds blocks"
                    assert status != SequenceStatus.WAITING or seq.num_computed_tokens == 0
                group = seq.group
                if group is not None and not group.forked:
                    assert seq is group.parent and status != SequenceStatus.FINISHING
                    for child in group.seqs[1:]:
                        assert child.status == SequenceStatus.PENDING_FORK and not child.block_table, \
                            f"sample {child.seq_id} of an unforked request is {child.status}"
        holders = Counter(b for seq in self.running for b in seq.block_table)
        for block in self.block_manager.blocks:
            assert block.ref_count == holders[block.block_id], \
                f"block {block.block_id}: ref_count {block.ref_count}, held by {holders[block.block_id]}"
