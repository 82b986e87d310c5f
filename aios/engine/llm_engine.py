"""The engine loop: tokenizer + scheduler + block manager + model runner.

    add_request(prompt, params) -> Sequence          (validated; queued as WAITING; with n or best_of
                                                      > 1 the parent of its SequenceGroup: seq.group)
    step() -> list[StepOutput]                       (schedule -> launch -> postprocess tokens)
    abort_request(seq_id)                            (its request, every sample: blocks freed at once)

The engine is glue: the Scheduler owns every request's life (admission, chunks, placeholders, stops,
prefix-cache registration, FINISHED), the ModelRunner runs steps, the engine hands one to the other.
`step` never raises for one request's sake: bad requests are refused in add_request, before they
reach the scheduler, and a request whose own host-side work fails finishes alone with "error".

Structured outputs (lesson 17) and async scheduling: a constrained row's mask needs the grammar
state after its previous token, and under async scheduling that token is still on the GPU when the
next step is launched. So a step that samples a constrained sequence whose token is in flight runs
as vLLM's does (its `pending_structured_output_tokens`): launch the model (its input token is read
on the device as always), then, while the GPU runs it, read the in-flight step's tokens and
postprocess them (the grammars advance), fill the bitmask, upload it, and only then launch the
mask and the sampler. The forward still overlaps the host's work; what is lost is the overlap of
the next schedule with the sampler. Steps without a constrained row run exactly as before.

A new constraint compiles in the structured-output manager's worker thread (aios/structured_output/
manager.py); add_request only checks that it parses. Until the compile is done the request waits,
unadmitted (scheduler.py), and the other requests keep stepping; each `step` first hands finished
compiles their sequences' grammars (`_take_grammars`). A step with nothing to run but a compile
waits for it, blocking for at most GRAMMAR_WAIT_S, so a caller looping on step() neither spins
nor stops early (has_unfinished_requests stays true while the request waits).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures

import torch

from aios.config import Config
from aios.engine.block_manager import BlockManager
from aios.engine.cuda_graph import CUDAGraphRunner
from aios.engine.inputs import check_unicode, describe_type, token_id_list
from aios.engine.model_runner import ModelRunner, WeightLoader
from aios.engine.request_output import logprob_dicts, output_text, request_output
from aios.engine.scheduler import InflightStep, ScheduledBatch, Scheduler, StepOutput
from aios.engine.sequence import Sequence, SequenceGroup, SequenceStatus
from aios.engine.step_inputs import StepInputs
from aios.engine.stop_checker import StopChecker
from aios.layers.backend import Backend
from aios.layers.logits_processors import LogitsProcessing
from aios.layers.logprobs import TokenLogprobs
from aios.layers.sampler import Sampler
from aios.outputs import Logprob
from aios.sampling_params import SamplingParams
from aios.structured_output import Grammar, StructuredOutputGrammar, StructuredOutputManager

logger = logging.getLogger("aios")

# The longest a step with nothing else to do blocks on a grammar compile before it returns (the
# server's loop then takes new requests and aborts, and steps again).
GRAMMAR_WAIT_S = 0.05

__all__ = ["LLMEngine", "StepOutput"]


def eos_token_ids(model_dir: str, config: Config, tokenizer) -> list[int]:
    """Every id that ends generation: generation_config.json's, config.json's and the tokenizer's."""
    ids: list[int] = []
    path = os.path.join(model_dir, "generation_config.json")
    if os.path.isfile(path):
        with open(path) as f:
            eos = json.load(f).get("eos_token_id")
        ids += [eos] if isinstance(eos, int) else list(eos or [])
    ids += config.hf_config.eos_token_id
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


class LLMEngine:
    def __init__(self, model: str, *, block_manager_cls: type[BlockManager] = BlockManager,
                 scheduler_cls: type[Scheduler] = Scheduler, backend: Backend | None = None,
                 sampler: Sampler | None = None, weight_loader: WeightLoader | None = None,
                 step_inputs_fn: Callable[..., StepInputs] | None = None,
                 cuda_graph_runner_cls: type[CUDAGraphRunner] | None = None, **kwargs) -> None:
        """`kwargs` are Config's fields. The other arguments are the engine's seams: each piece of
        state has one owner, chosen here, so a learner's block manager (lessons 06, 13), step inputs
        (07), scheduler (08), attention kernels (09, as a Backend), weight loader (03, 10), CUDA-graph
        runner (11) or sampler (12) drives the real engine by being passed in (lessons/check.py does
        exactly that)."""
        runner_seams = {k: v for k, v in dict(backend=backend, sampler=sampler, weight_loader=weight_loader,
                                              step_inputs_fn=step_inputs_fn,
                                              cuda_graph_runner_cls=cuda_graph_runner_cls).items() if v is not None}
        if kwargs.get("tensor_parallel_size", 1) != 1:
            from aios.distributed.launcher import exit_if_spawned_import
            exit_if_spawned_import(kwargs["tensor_parallel_size"])
            if runner_seams:
                raise ValueError(f"{', '.join(runner_seams)}: single-GPU seams; the tensor-parallel workers build "
                                 "the engine's own")
        self.config = config = Config(model, **kwargs)
        self.tokenizer = None
        if not config.skip_tokenizer_init:
            from transformers import AutoTokenizer  # here, not at the top: TP workers import aios without it
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(model)
            except Exception as e:  # noqa: BLE001 - tokenizers raise many types for broken files
                raise ValueError(f"cannot load the tokenizer from {model!r}: {e}") from e
        if config.tensor_parallel_size > 1:
            from aios.distributed.launcher import create_tp_runner  # lesson 14
            self.model_runner = create_tp_runner(config)
        else:
            self.model_runner = ModelRunner(config, **runner_seams)
        self.num_kvcache_blocks = self.model_runner.num_kvcache_blocks
        self.block_manager = block_manager_cls(self.num_kvcache_blocks, config.kvcache_block_size,
                                               config.enable_prefix_caching)
        self.eos_token_ids = eos_token_ids(model, config, self.tokenizer)
        stop_checker = StopChecker(self.eos_token_ids, config.max_model_len, self.tokenizer)
        self.scheduler = scheduler_cls(config, self.block_manager, stop_checker)
        self.structured_output = None if self.tokenizer is None else StructuredOutputManager(
            self.tokenizer, config.hf_config.vocab_size, self.eos_token_ids, self.model_runner.device,
            use_triton=self.model_runner.is_cuda and config.fused_kernels)
        if self.structured_output is not None and self.model_runner.is_cuda:
            self.structured_output.warm_up([config.dtype, torch.float32])   # no request pays a Triton compile
        self._num_constrained = 0             # unfinished requests with a grammar: 0 -> steps skip the check
        logger.info(config.describe(self.num_kvcache_blocks))
        self.seqs: dict[int, Sequence] = {}   # unfinished requests by id (for abort_request)
        # requests (their parent sequence) whose grammar is compiling, in arrival order
        self._compiling: dict[Sequence, Future[Grammar]] = {}
        self._next_seq_id = 0
        # TP workers take their input tokens from rank 0's host arrays: TP steps run synchronously
        self.async_scheduling = config.async_scheduling and config.tensor_parallel_size == 1
        self._inflight: InflightStep | None = None
        self.closed = False                   # close() was called: the engine takes no requests

    # ---- requests ------------------------------------------------------------------------------

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """A prompt's token ids: a str is encoded; token ids (a list, tuple or 1-D integer array)
        are checked against the vocabulary. Anything else is a TypeError saying what was given."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("skip_tokenizer_init=True: prompts must be lists of token ids")
            check_unicode(prompt, "the prompt")
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        ids = token_id_list(prompt)
        if ids is None:
            hint = " (decode it to a str first)" if isinstance(prompt, (bytes, bytearray)) else ""
            raise TypeError(f"a prompt must be a str or a list of int token ids, got {describe_type(prompt)}{hint}")
        vocab = self.config.hf_config.vocab_size
        if ids and (min(ids) < 0 or max(ids) >= vocab):
            bad = [t for t in ids if not 0 <= t < vocab]
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return ids

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise a ValueError (or TypeError) unless this request can run to its end in this engine."""
        cfg = self.config
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if n >= cfg.max_model_len:
            raise ValueError(f"the prompt has {n} tokens but max_model_len is {cfg.max_model_len} "
                             f"(prompt plus at least one output token must fit)")
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(params).__name__}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(params, name)
            if value is not None and value > cfg.max_logprobs:
                raise ValueError(f"{name}: {value} is more than this engine's max_logprobs={cfg.max_logprobs} "
                                 f"(Config.max_logprobs)")
        # a request's own cost to every step it shares is bounded, as for stop strings below
        if params.bad_words and (len(params.bad_words) > cfg.max_bad_words
                                 or max(map(len, params.bad_words)) > cfg.max_stop_string_len):
            raise ValueError(f"bad_words must hold at most {cfg.max_bad_words} words (Config.max_bad_words) of at most "
                             f"{cfg.max_stop_string_len} characters each (Config.max_stop_string_len)")
        if params.logit_bias and len(params.logit_bias) > cfg.max_logit_bias:
            raise ValueError(f"logit_bias must hold at most {cfg.max_logit_bias} entries (Config.max_logit_bias), "
                             f"got {len(params.logit_bias)}")
        self._logits_processing(params)               # token ids in the vocabulary, bad_words tokenizable
        if params.structured_outputs is not None:
            if self.structured_output is None:
                raise ValueError("structured_outputs needs a tokenizer (skip_tokenizer_init=True)")
            self.structured_output.check(params)        # a bad schema / regex / grammar: ValueError here
        if params.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer (skip_tokenizer_init=True)")
        if len(params.stop_strings) > cfg.max_stop_strings:
            raise ValueError(f"stop must hold at most {cfg.max_stop_strings} strings (Config.max_stop_strings), "
                             f"got {len(params.stop_strings)}")
        if any(len(s) > cfg.max_stop_string_len for s in params.stop_strings):
            raise ValueError(f"stop strings must be at most {cfg.max_stop_string_len} characters long "
                             f"(Config.max_stop_string_len), got one of {max(map(len, params.stop_strings))}")
        for s in params.stop_strings:
            check_unicode(s, "a stop string")
        best_of = params.best_of or params.n
        if best_of > cfg.max_num_seqs:
            field_name = "best_of" if params.best_of else "n"
            raise ValueError(f"{field_name} must be at most max_num_seqs={cfg.max_num_seqs}, got {best_of}: the "
                             f"samples of one prompt are all sampled in one step")
        total = min(n + params.max_tokens, cfg.max_model_len)
        # the last token is sampled, never fed back: its K/V is never written, so it needs no slot
        need = (total - 1 + cfg.kvcache_block_size - 1) // cfg.kvcache_block_size
        if need > self.num_kvcache_blocks:
            raise ValueError(f"a sequence of {total} tokens needs {need} KV blocks but the cache has only "
                             f"{self.num_kvcache_blocks}; lower max_tokens or give the cache more memory")

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None) -> Sequence:
        """Tokenize and validate one request and queue it (WAITING); raise if it cannot run."""
        params = params or SamplingParams()
        token_ids = self.tokenize(prompt)
        self.validate(token_ids, params)
        return self._enqueue(token_ids, params)

    def _enqueue(self, token_ids: list[int], params: SamplingParams) -> Sequence:
        """Queue a request that tokenize() and validate() have already passed. One that asks for
        several samples (best_of, default n) is a SequenceGroup: sample j has params.for_choice(j)
        (a seeded request's sample j draws with seed + j); only the parent (sample 0) is queued,
        the others wait PENDING_FORK for its first token (scheduler.py: one prefill for all).
        A constrained request gets its grammars at once if its spec is cached, else once its
        compile is done (`_take_grammars`)."""
        if self.closed:
            raise RuntimeError("this LLM is closed")
        best_of = params.best_of or params.n
        processing = self._logits_processing(params, token_ids)      # the request's, shared by its samples
        seqs = []
        for j in range(best_of):
            seq = Sequence(self._next_seq_id, token_ids, params.for_choice(j), self.config.kvcache_block_size,
                           processing)
            self._next_seq_id += 1
            self.seqs[seq.seq_id] = seq
            seqs.append(seq)
        if best_of > 1:
            group = SequenceGroup(seqs, params.n)
            for seq in seqs:
                seq.group = group
            for seq in seqs[1:]:
                seq.status = SequenceStatus.PENDING_FORK
        self.scheduler.add(seqs[0])
        if params.structured_outputs is not None:
            future = self.structured_output.compile(params)
            if future.done() and future.exception() is None:
                self._set_grammars(seqs[0], future.result())        # cached: ready at once
            else:
                self._compiling[seqs[0]] = future
        return seqs[0]

    def _set_grammars(self, seq: Sequence, grammar: Grammar) -> None:
        """Each sample of seq's request gets its own state of the compiled `grammar`."""
        for s in seq.group.seqs if seq.group is not None else [seq]:
            s.grammar = StructuredOutputGrammar(grammar)
            self._num_constrained += 1

    def _take_grammars(self) -> list[StepOutput]:
        """Hand each finished compile's request its grammars (the scheduler may admit it now); a
        compile that failed finishes its request alone, "error". Returns those finished."""
        outputs = []
        for seq, future in list(self._compiling.items()):
            if not future.done():
                continue
            del self._compiling[seq]
            try:
                grammar = future.result()
            except Exception as e:  # noqa: BLE001 - this request's own failure (validate parsed it)
                logger.error("the grammar of sequence %d failed to compile: %s", seq.seq_id, e)
                for out in self.scheduler.fail(seq, f"{type(e).__name__}: {e}"):
                    self.seqs.pop(out.seq.seq_id, None)
                    outputs.append(out)
            else:
                self._set_grammars(seq, grammar)
        return outputs

    def _logits_processing(self, params: SamplingParams,
                           prompt_token_ids: list[int] | None = None) -> LogitsProcessing | None:
        vocab_size = self.config.hf_config.vocab_size
        return LogitsProcessing.from_params(params, self.eos_token_ids, self.tokenizer, vocab_size, prompt_token_ids)

    def abort_request(self, seq_id: int) -> None:
        """Abort the request seq_id belongs to: the sequence and, for several samples, all of them."""
        seq = self.seqs.get(seq_id)
        if seq is not None:
            group = seq.group
            self._compiling.pop(seq if group is None else group.parent, None)    # its result is dropped
            for s in group.seqs if group is not None else [seq]:
                if self.seqs.pop(s.seq_id, None) is not None:      # (a finished sample left already)
                    self._num_constrained -= s.grammar is not None
            self.scheduler.abort(seq)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished() or self._inflight is not None

    # ---- the loop ------------------------------------------------------------------------------

    def step(self, batch: ScheduledBatch | None = None) -> list[StepOutput]:
        """Schedule and launch one step; return the tokens the host learned in this call.
        (`batch`: a schedule already made, for tests and lessons that look at one first.)

        Synchronous: launch step N, wait for its tokens, postprocess them.
        Async scheduling (lesson 11): launch step N, then postprocess step N-1's tokens while the
        GPU runs step N, so the host's scheduling and bookkeeping hide behind GPU time. Sequences
        carry a PLACEHOLDER for a token in flight; step N reads it on the device."""
        failed = self._take_grammars() if self._compiling else []
        if batch is None:
            batch = self.scheduler.schedule()
            if not batch.seqs and self._inflight is None and self._compiling and not failed:
                # only compiles are left to wait for: block on the first (not spin, not return empty)
                wait_futures(list(self._compiling.values()), timeout=GRAMMAR_WAIT_S, return_when=FIRST_COMPLETED)
                failed = self._take_grammars()
                batch = self.scheduler.schedule()
        launched, outputs = None, None
        if batch.seqs:
            if self._num_constrained and any(s.grammar is not None for s in batch.sampled_seqs):
                launched, outputs = self._launch_constrained(batch)
            else:
                launched = self.scheduler.launched(batch, self.model_runner.run(batch))
        if self.async_scheduling:
            launched, self._inflight = self._inflight, launched
        if outputs is None:
            outputs = self.scheduler.postprocess(launched, launched.handle.tokens()) if launched else []
        for out in outputs:
            if out.finished:
                self.seqs.pop(out.seq.seq_id, None)
                self._num_constrained -= out.seq.grammar is not None
        return failed + outputs if failed else outputs

    def _launch_constrained(self, batch: ScheduledBatch) -> tuple[InflightStep, list[StepOutput] | None]:
        """Launch a step that samples constrained rows (see the module docstring). Returns it and,
        if the step in flight had to be read first for their masks, that step's outputs."""
        sampled = batch.sampled_seqs
        step: InflightStep | None = None
        resolved: list[StepOutput] | None = None

        def mask(logits):
            # the model is launched and the runner has read the sequences: the step's bookkeeping
            # (placeholders) comes first, so the previous step's stop checks see this step in flight
            nonlocal step, resolved
            step = self.scheduler.launched(batch, None)
            prev = self._inflight
            if prev is not None and not {id(s) for s in prev.sampled}.isdisjoint(
                    id(s) for s in sampled if s.grammar is not None):
                self._inflight = None
                resolved = self.scheduler.postprocess(prev, prev.handle.tokens())
            return self.structured_output.apply(logits, sampled)

        handle = self.model_runner.run(batch, logits_processor=mask)
        step.handle = handle
        return step, resolved

    # ---- what a request hands back (request_output.py) ------------------------------------------

    def output_text(self, seq: Sequence) -> str:
        return output_text(seq, self.tokenizer)

    def logprob_dicts(self, entries: list[TokenLogprobs | None]) -> list[dict[int, Logprob] | None]:
        return logprob_dicts(entries, self.tokenizer)

    def output(self, seq: Sequence) -> dict:
        return request_output(seq, self.tokenizer)

    def stats(self) -> dict:
        bm = self.block_manager
        return {
            "num_running": len(self.scheduler.running),
            "num_waiting": len(self.scheduler.waiting),
            "kv_blocks_used": bm.num_used_blocks,
            "kv_blocks_free": bm.num_free_blocks,
            "kv_blocks_total": bm.num_blocks,
            "prefix_cache_hit_rate": bm.prefix_cache_hit_rate,
            "prefix_cache_queries": bm.num_prefix_queries,
            "prefix_cache_hits": bm.num_prefix_hits,
            "num_preemptions": self.scheduler.num_preemptions,
            "num_generated_tokens": self.scheduler.num_generated_tokens,
            "num_computed_prompt_tokens": self.scheduler.num_computed_prompt_tokens,
            "num_forked_seqs": self.scheduler.num_forked_seqs,
        }

    def close(self) -> None:
        """Stop TP workers and free the engine's device memory. Requests still queued are aborted;
        add_request raises afterwards. Calling it again does nothing."""
        if self.closed:
            return
        self.closed = True
        for seq_id in list(self.seqs):
            self.abort_request(seq_id)
        self._inflight = None
        if self.structured_output is not None:
            self.structured_output.close()
        self.model_runner.close()
