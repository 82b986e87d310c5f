"""Compiling off the engine's thread, per-sequence grammar state, and one step's token bitmask:
filled on the host, applied on the device.

    StructuredOutputManager.check(params)                     (validate: the spec parses, or ValueError)
    StructuredOutputManager.compile(params) -> Future[Grammar] (add_request: ready at once if cached)
    StructuredOutputGrammar(grammar)                          (LLMEngine, once the future is done)
    StructuredOutputGrammar.accept(token)                     (Scheduler.postprocess, per token)
    StructuredOutputManager.apply(logits, sampled)            (each step, before the sampler)

Compiling against the tokenizer (up to ~40 ms for a new schema at 150k tokens on the CPU) runs
in the manager's one worker thread (xgrammar releases the GIL and uses its own threads inside a
compile), so the steps of running requests go on meanwhile: the request waits, WAITING and
unadmitted, until its grammar is ready (vLLM's WAITING_FOR_FSM; scheduler.py). One worker runs
compiles in arrival order (a spec asked for twice is compiled once: the second compile finds it
in the cache); a spec already cached never reaches the worker. close() shuts the pool down.

Who writes what: a sequence's StructuredOutputGrammar (its matcher: the grammar state after the
output tokens the host knows) is created by LLMEngine once its compile is done, before the
sequence is first scheduled, and advanced only by Scheduler.postprocess, once per token, in
output order, before the stop check. It lives on the Sequence (`seq.grammar`), so it survives
preemption (the output tokens do, and are recomputed, not resampled) and prefix-cache hits
(which skip computing prompt tokens, never accepting tokens). Filling a bitmask only reads it.

Invariants:
- seq.grammar has accepted exactly seq's known output tokens, in order: a token sampled after a
  stop is dropped before it is accepted (postprocess skips finished sequences), an aborted
  sequence is never stepped again, so no token is ever rolled back.
- A step's mask row for seq allows exactly the tokens that keep its output a prefix of a string
  the grammar accepts, and EOS only where the grammar may end; once the grammar has ended (EOS
  accepted), the sequence stops ("stop", Scheduler.postprocess), whatever ignore_eos says.
- Rows without a constraint are neither read nor written; a step with no constrained row never
  calls `apply`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch

from aios.kernels.token_bitmask import apply_token_bitmask, apply_token_bitmask_ref
from aios.sampling_params import SamplingParams
from aios.structured_output.compiler import Grammar, GrammarCompiler

if TYPE_CHECKING:
    from aios.engine.sequence import Sequence


class StructuredOutputGrammar:
    """One sequence's place in its grammar (an xgrammar GrammarMatcher)."""

    def __init__(self, grammar: Grammar) -> None:
        import xgrammar as xgr
        self.matcher = xgr.GrammarMatcher(grammar.compiled)
        self.guard = grammar.guard
        self.num_accepted = 0

    def accept(self, token_id: int) -> None:
        """Advance by one sampled token; a token the mask did not allow is a RuntimeError (the
        scheduler finishes that sequence alone, with "error")."""
        if not self.matcher.accept_token(token_id):
            raise RuntimeError(f"token {token_id} is not allowed by the grammar at output position "
                               f"{self.num_accepted}")
        self.num_accepted += 1

    @property
    def is_terminated(self) -> bool:
        """The grammar has ended: the sequence's output is complete (EOS accepted)."""
        return self.matcher.is_terminated()

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into bitmask[row] (int32 words)."""
        if self.matcher.is_terminated():        # its token is dropped anyway; any row will do
            bitmask[row].fill_(-1)
            return
        self.matcher.fill_next_token_bitmask(bitmask, row)
        if self.guard is not None:
            words = bitmask.numpy()[row]               # a view: the AND writes the row in place
            np.bitwise_and(words, self.guard, out=words)


class StructuredOutputManager:
    """Compiles constraints (GrammarCompiler, cached; in a worker thread) and masks each step's
    constrained rows. One per engine (LLMEngine owns it)."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: list[int], device: torch.device,
                 use_triton: bool) -> None:
        """`vocab_size`: the logits' width; `use_triton`: the Triton kernel (CUDA with fused
        kernels) or its torch reference (the CPU path)."""
        self.compiler = GrammarCompiler(tokenizer, vocab_size, eos_token_ids)
        self.vocab_size, self.device = vocab_size, torch.device(device)
        self.num_words = (vocab_size + 31) // 32
        self.apply_bitmask = apply_token_bitmask if use_triton else apply_token_bitmask_ref
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aios-grammar")   # starts on first use

    @torch.inference_mode()
    def warm_up(self, dtypes: list[torch.dtype]) -> None:
        """Compile the Triton kernel now for each logits dtype, so no request pays for it: it does not
        specialize on anything else that changes (the mask starts 16-byte aligned, the row count is
        the grid)."""
        if self.apply_bitmask is not apply_token_bitmask:
            return
        for dtype in dict.fromkeys(dtypes):
            logits = torch.zeros(1, self.vocab_size, dtype=dtype, device=self.device)
            packed = torch.full((4 + self.num_words,), -1, dtype=torch.int32, device=self.device)
            packed[0] = 0
            self.apply_bitmask(logits, packed[4:].view(1, self.num_words), packed[:1])

    def check(self, params: SamplingParams) -> None:
        """A ValueError naming the field unless the request's constraint parses (no tokenizer)."""
        self.compiler.check(params.structured_outputs)

    def compile(self, params: SamplingParams) -> Future[Grammar]:
        """The request's compiled grammar: a done future if it is cached, else one the worker
        thread completes (with the Grammar, or the exception `GrammarCompiler.compile` raised)."""
        spec = params.structured_outputs
        grammar = self.compiler.cached(spec)
        if grammar is None:
            return self._pool.submit(self.compiler.compile, spec)
        future: Future[Grammar] = Future()
        future.set_result(grammar)
        return future

    def close(self) -> None:
        """Shut the worker down: queued compiles are cancelled; one in flight ends on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def fill_bitmask(self, sampled: list[Sequence]) -> tuple[torch.Tensor, int] | None:
        """The host bitmask of the constrained rows among `sampled` (the step's logits rows, in
        order), or None when no row is constrained. One flat int32 tensor, so one upload: the n
        rows' indices, padded to 4 (the mask starts 16-byte aligned: Triton specializes on it),
        then the [n, num_words] mask. Returns (packed, n)."""
        rows = [i for i, s in enumerate(sampled) if s.grammar is not None]
        if not rows:
            return None
        n, start = len(rows), -(-len(rows) // 4) * 4
        packed = torch.empty(start + n * self.num_words, dtype=torch.int32,
                             pin_memory=self.device.type == "cuda")
        packed[:n] = torch.tensor(rows, dtype=torch.int32)
        bitmask = packed[start:].view(n, self.num_words)
        for j, i in enumerate(rows):
            seq = sampled[i]
            if seq.is_finished:                 # stopped by the step resolved just before: token dropped
                bitmask[j].fill_(-1)
            else:
                seq.grammar.fill(bitmask, j)
        return packed, n

    @torch.inference_mode()      # the logits are inference tensors (ModelRunner.execute)
    def apply(self, logits: torch.Tensor, sampled: list[Sequence]) -> torch.Tensor:
        """Mask the constrained rows of this step's logits in place (the other rows untouched)."""
        filled = self.fill_bitmask(sampled)
        if filled is None:
            return logits
        packed, n = filled
        packed = packed.to(self.device, non_blocking=True)
        start = -(-n // 4) * 4
        self.apply_bitmask(logits, packed[start:].view(n, self.num_words), packed[:n])
        return logits
