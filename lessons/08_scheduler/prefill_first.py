"""Lesson 08's other policy: prefill-first scheduling, as a subclass of any Scheduler (aios's or yours).

aios schedules decode-first: every running sequence gets its next token, then what budget is left
goes to prefill chunks (one step mixes both). Prefill-first (vLLM's original scheduler, nano-vllm)
runs a step of prefills only while requests wait, and lets the running sequences decode only in
steps with nobody left to admit: new requests get their first token sooner, the running ones
wait through every prefill step between two of their tokens.
"""

from __future__ import annotations

from aios.engine.scheduler import ScheduledBatch, Scheduler


def prefill_first(base: type[Scheduler]) -> type[Scheduler]:
    """`base` with prefill-first order: while requests wait, decodes sit the step out."""

    class PrefillFirst(base):
        def schedule(self) -> ScheduledBatch:
            if not self.waiting:
                return super().schedule()
            running, max_num_seqs = self.running, self.max_num_seqs
            decoding = {id(s) for s in running if len(s) - s.num_computed_tokens == 1}
            if len(decoding) >= max_num_seqs:
                return super().schedule()                                  # no room to admit: decode
            # a prefill-only step: the decodes sit out, but still count against max_num_seqs
            self.running = [s for s in running if id(s) not in decoding]    # prefill chunks still run
            self.max_num_seqs = max_num_seqs - len(decoding)
            try:
                batch = super().schedule()
            finally:
                self.max_num_seqs = max_num_seqs
                kept, before = {id(s) for s in self.running}, {id(s) for s in running}
                self.running = ([s for s in running if id(s) in kept or id(s) in decoding]
                                + [s for s in self.running if id(s) not in before])   # oldest first
            return batch if batch.seqs else super().schedule()             # no one fit: decode

    PrefillFirst.__name__ = f"PrefillFirst{base.__name__}"
    return PrefillFirst
