"""The engine's side of structured outputs (lesson 17): the requests whose grammar is compiling, and
the launch of a step that samples constrained rows. LLMEngine owns one StructuredOutputRequests;
the grammars themselves (compile, each sequence's matcher, the step's bitmask) are
aios/structured_output/'s.

Compiles. A new constraint compiles in the structured-output manager's worker thread
(aios/structured_output/manager.py); LLMEngine.add_request only checks that it parses. Until the
compile is done the request waits, unadmitted (scheduler.py), and the other requests keep stepping;
each `LLMEngine.step` first hands finished compiles their sequences' grammars (`take_grammars`). A
step with nothing to run but a compile waits for it (`wait`), blocking for at most GRAMMAR_WAIT_S,
so a caller looping on step() neither spins nor stops early (has_unfinished_requests stays true
while the request waits).

Launch, with async scheduling. A constrained row's mask needs the grammar state after its previous
token, and under async scheduling that token is still on the GPU when the next step is launched.
So a step that samples a constrained sequence whose token is in flight runs as vLLM's does (its
`pending_structured_output_tokens`): launch the model (its input token is read on the device as
always), then, while the GPU runs it, read the in-flight step's tokens and postprocess them (the
grammars advance), fill the bitmask, upload it, and only then launch the mask and the sampler
(`launch`). The forward still overlaps the host's work; what is lost is the overlap of the next
schedule with the sampler. Steps without a constrained row run exactly as before.

Invariants:
- num_constrained is the number of unfinished sequences that hold a grammar: while it is 0 no
  step looks for a constrained row.
- A request (its parent sequence) is in `compiling` from its add until its compile is taken (then
  every sample holds its own grammar state, or the request finished with "error") or it is
  aborted; until then none of its samples holds a grammar, so the scheduler does not admit it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures

from aios.engine.model_runner import ModelRunner
from aios.engine.scheduler import InflightStep, ScheduledBatch, Scheduler, StepOutput
from aios.engine.sequence import Sequence
from aios.sampling_params import SamplingParams
from aios.structured_output import Grammar, StructuredOutputGrammar, StructuredOutputManager

logger = logging.getLogger("aios")

# The longest a step with nothing else to do blocks on a grammar compile before it returns (the
# server's loop then takes new requests and aborts, and steps again).
GRAMMAR_WAIT_S = 0.05


class StructuredOutputRequests:
    def __init__(self, manager: StructuredOutputManager | None, scheduler: Scheduler) -> None:
        self.manager = manager                # None without a tokenizer: validate refuses constraints
        self.scheduler = scheduler
        self.compiling: dict[Sequence, Future[Grammar]] = {}    # in arrival order
        self.num_constrained = 0

    def add(self, seq: Sequence, params: SamplingParams) -> None:
        """seq's request (seq: its parent) gets its grammars at once if its spec is cached, else
        once its compile is done (`take_grammars`)."""
        future = self.manager.compile(params)
        if future.done() and future.exception() is None:
            self._set_grammars(seq, future.result())
        else:
            self.compiling[seq] = future

    def _set_grammars(self, seq: Sequence, grammar: Grammar) -> None:
        """Each sample of seq's request gets its own state of the compiled `grammar`."""
        for s in seq.group.seqs if seq.group is not None else [seq]:
            s.grammar = StructuredOutputGrammar(grammar)
            self.num_constrained += 1

    def take_grammars(self) -> list[StepOutput]:
        """Hand each finished compile's request its grammars (the scheduler may admit it now); a
        compile that failed finishes its request alone, "error". Returns those finished."""
        outputs = []
        for seq, future in list(self.compiling.items()):
            if not future.done():
                continue
            del self.compiling[seq]
            try:
                grammar = future.result()
            except Exception as e:  # noqa: BLE001 - this request's own failure (validate parsed it)
                logger.error("the grammar of sequence %d failed to compile: %s", seq.seq_id, e)
                outputs += self.scheduler.fail(seq, f"{type(e).__name__}: {e}")
            else:
                self._set_grammars(seq, grammar)
        return outputs

    def wait(self) -> None:
        """Block until the first compile is done, for at most GRAMMAR_WAIT_S."""
        wait_futures(list(self.compiling.values()), timeout=GRAMMAR_WAIT_S, return_when=FIRST_COMPLETED)

    def abort(self, seq: Sequence) -> None:
        """seq's request leaves: its compile's result, if one is pending, is dropped."""
        self.compiling.pop(seq if seq.group is None else seq.group.parent, None)

    def finished(self, seq: Sequence) -> None:
        """seq (one sample) is finished or aborted: it no longer counts as constrained."""
        self.num_constrained -= seq.grammar is not None

    def samples_constrained(self, batch: ScheduledBatch) -> bool:
        return bool(self.num_constrained) and any(s.grammar is not None for s in batch.sampled_seqs)

    def launch(self, batch: ScheduledBatch, model_runner: ModelRunner, inflight: InflightStep | None,
               take_inflight: Callable[[], None]) -> tuple[InflightStep, list[StepOutput] | None]:
        """Launch a step that samples constrained rows (see the module docstring). Returns it and,
        if the step in flight (`inflight`, the engine's) had to be read first for their masks, that
        step's outputs; `take_inflight` is called as it is read: the engine no longer holds it."""
        sampled = batch.sampled_seqs
        step: InflightStep | None = None
        resolved: list[StepOutput] | None = None

        def mask(logits):
            # the model is launched and the runner has read the sequences: the step's bookkeeping
            # (placeholders) comes first, so the previous step's stop checks see this step in flight
            nonlocal step, resolved
            step = self.scheduler.launched(batch, None)
            if inflight is not None and not {id(s) for s in inflight.sampled}.isdisjoint(
                    id(s) for s in sampled if s.grammar is not None):
                take_inflight()
                resolved = self.scheduler.postprocess(inflight, inflight.handle.tokens())
            return self.manager.apply(logits, sampled)

        handle = model_runner.run(batch, logits_processor=mask)
        step.handle = handle
        return step, resolved
