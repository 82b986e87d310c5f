"""The engine loop: tokenizer + scheduler + block manager + model runner.

    add_request(prompt, params) -> Sequence          (validated; queued as WAITING; with n or best_of
                                                      > 1 the parent of its SequenceGroup: seq.group)
    step() -> list[StepOutput]                       (schedule -> launch -> postprocess tokens)
    abort_request(seq_id)                            (its request, every sample: blocks freed at once)

The engine is glue: the Scheduler owns every request's life (admission, chunks, placeholders, stops,
prefix-cache registration, FINISHED), the ModelRunner runs steps, the engine hands one to the other.
`step` never raises for one request's sake: bad requests are refused in add_request, before they
reach the scheduler, and a request whose own host-side work fails finishes alone with "error".

Structured outputs (lesson 17): requests whose grammar is compiling and the launch of a step that
samples constrained rows are structured_output_requests.py's (StructuredOutputRequests); a step
without a constrained row never looks at them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import torch

from aios.config import Config
from aios.engine.block_manager import BlockManager
from aios.engine.cuda_graph import CUDAGraphRunner
from aios.engine.input_processor import InputProcessor
from aios.engine.model_runner import ModelRunner, WeightLoader
from aios.engine.request_output import logprob_dicts, output_text, request_output
from aios.engine.scheduler import InflightStep, ScheduledBatch, Scheduler, StepOutput
from aios.engine.sequence import Sequence, SequenceGroup, SequenceStatus
from aios.engine.step_inputs import StepInputs
from aios.engine.stop_checker import StopChecker
from aios.engine.structured_output_requests import GRAMMAR_WAIT_S, StructuredOutputRequests
from aios.layers.backend import Backend
from aios.layers.logprobs import TokenLogprobs
from aios.layers.sampler import Sampler
from aios.outputs import Logprob
from aios.sampling_params import SamplingParams
from aios.structured_output import StructuredOutputManager

logger = logging.getLogger("aios")

__all__ = ["GRAMMAR_WAIT_S", "LLMEngine", "StepOutput"]


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
        self.input_processor = InputProcessor(config, self.tokenizer, self.eos_token_ids, self.num_kvcache_blocks,
                                              self.structured_output)
        self.structured_output_requests = StructuredOutputRequests(self.structured_output, self.scheduler)
        logger.info(config.describe(self.num_kvcache_blocks))
        self.seqs: dict[int, Sequence] = {}   # unfinished requests by id (for abort_request)
        self._next_seq_id = 0
        # TP workers take their input tokens from rank 0's host arrays: TP steps run synchronously
        self.async_scheduling = config.async_scheduling and config.tensor_parallel_size == 1
        self._inflight: InflightStep | None = None
        self.closed = False                   # close() was called: the engine takes no requests

    # ---- requests ------------------------------------------------------------------------------

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """A prompt's token ids (InputProcessor.tokenize: a str is encoded, token ids are checked)."""
        return self.input_processor.tokenize(prompt)

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise a ValueError (or TypeError) unless this request can run to its end in this engine
        (InputProcessor.validate)."""
        self.input_processor.validate(prompt_token_ids, params)

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
        compile is done (StructuredOutputRequests.add)."""
        if self.closed:
            raise RuntimeError("this LLM is closed")
        best_of = params.best_of or params.n
        processing = self.input_processor.logits_processing(params, token_ids)   # shared by its samples
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
            self.structured_output_requests.add(seqs[0], params)
        return seqs[0]

    def abort_request(self, seq_id: int) -> None:
        """Abort the request seq_id belongs to: the sequence and, for several samples, all of them."""
        seq = self.seqs.get(seq_id)
        if seq is not None:
            self.structured_output_requests.abort(seq)
            for s in seq.group.seqs if seq.group is not None else [seq]:
                if self.seqs.pop(s.seq_id, None) is not None:      # (a finished sample left already)
                    self.structured_output_requests.finished(s)
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
        requests = self.structured_output_requests
        failed = self._take_grammars() if requests.compiling else []
        if batch is None:
            batch = self.scheduler.schedule()
            if not batch.seqs and self._inflight is None and requests.compiling and not failed:
                # only compiles are left to wait for: block on the first (not spin, not return empty)
                requests.wait()
                failed = self._take_grammars()
                batch = self.scheduler.schedule()
        launched, outputs = None, None
        if batch.seqs:
            try:
                if requests.samples_constrained(batch):
                    launched, outputs = requests.launch(batch, self.model_runner, self._inflight,
                                                        self._take_inflight)
                else:
                    launched = self.scheduler.launched(batch, self.model_runner.run(batch))
            except BaseException:             # schedule() cached blocks that this step was to fill
                self.scheduler.launch_failed(batch)
                raise
        if self.async_scheduling:
            launched, self._inflight = self._inflight, launched
        if outputs is None:
            outputs = self.scheduler.postprocess(launched, launched.handle.tokens()) if launched else []
        for out in outputs:
            if out.finished:
                self.seqs.pop(out.seq.seq_id, None)
                requests.finished(out.seq)
        return failed + outputs if failed else outputs

    def _take_grammars(self) -> list[StepOutput]:
        """Finished compiles hand their requests their grammars; returns the requests that failed."""
        failed = self.structured_output_requests.take_grammars()
        for out in failed:
            self.seqs.pop(out.seq.seq_id, None)
        return failed

    def _take_inflight(self) -> None:
        self._inflight = None

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
