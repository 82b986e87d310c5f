"""The engine loop: tokenizer + scheduler + block manager + model runner.

    add_request(prompt, params) -> Sequence          (validated; queued as WAITING)
    step() -> list[StepOutput]                       (schedule -> launch -> resolve tokens)
    abort_request(seq_id)                            (frees its blocks at once)

`step` never raises for one request's sake: bad requests are refused in add_request, before they
reach the scheduler, so a serving loop keeps going.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass

import numpy as np

from aios.config import Config
from aios.engine.block_manager import BlockManager
from aios.engine.model_runner import ModelRunner
from aios.engine.scheduler import Scheduler
from aios.engine.sequence import PLACEHOLDER, Sequence, SequenceStatus
from aios.sampling_params import SamplingParams

logger = logging.getLogger("aios")


@dataclass
class StepOutput:
    seq: Sequence
    new_token_ids: list[int]
    finished: bool


def token_id_list(prompt: object) -> list[int] | None:
    """prompt as a list of Python ints if it is a flat sequence of integers (list, tuple, 1-D
    integer numpy array or torch tensor), else None."""
    if hasattr(prompt, "tolist") and getattr(prompt, "ndim", None) == 1:      # numpy / torch
        dtype = str(getattr(prompt, "dtype", ""))
        if "int" not in dtype:
            return None
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)):
        return None
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)) for t in prompt):
        return None
    return [int(t) for t in prompt]


def describe_type(x: object) -> str:
    if isinstance(x, (list, tuple)):
        kinds = sorted({type(t).__name__ for t in x})
        return f"a {type(x).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a {type(x).__name__}"


def check_unicode(text: str, what: str) -> None:
    """Raise a ValueError if text holds a lone surrogate (not valid Unicode: no tokenizer takes it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode: a lone surrogate {text[e.start]!r} at index {e.start}") \
            from None


def _eos_token_ids(model_dir: str, config: Config, tokenizer) -> list[int]:
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
    def __init__(self, model: str, **kwargs) -> None:
        if kwargs.get("tensor_parallel_size", 1) != 1:
            from aios.distributed.launcher import exit_if_spawned_import
            exit_if_spawned_import(kwargs["tensor_parallel_size"])
        self.config = config = Config(model, **kwargs)
        self.tokenizer = None
        if not config.skip_tokenizer_init:
            from transformers import AutoTokenizer  # here, not at the top: TP workers import aios without it
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(model)
            except Exception as e:  # noqa: BLE001 - tokenizers raise many types for broken files
                raise ValueError(f"cannot load the tokenizer from {model!r}: {e}") from e
        config.eos_token_ids = _eos_token_ids(model, config, self.tokenizer)
        if config.tensor_parallel_size > 1:
            from aios.distributed.launcher import create_tp_runner  # lesson 14
            self.model_runner = create_tp_runner(config)
        else:
            self.model_runner = ModelRunner(config)
        self.block_manager = BlockManager(config.num_kvcache_blocks, config.kvcache_block_size,
                                          config.enable_prefix_caching)
        self.scheduler = Scheduler(config, self.block_manager)
        logger.info(config.describe())
        self.seqs: dict[int, Sequence] = {}
        self._next_seq_id = 0
        # TP workers take their input tokens from rank 0's host arrays: TP steps run synchronously
        self.async_scheduling = config.async_scheduling and config.tensor_parallel_size == 1
        self._inflight: tuple | None = None
        self._rng = random.Random(config.seed)
        self.num_generated_tokens = 0
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
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return ids

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        cfg = self.config
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if n >= cfg.max_model_len:
            raise ValueError(f"the prompt has {n} tokens but max_model_len is {cfg.max_model_len} "
                             f"(prompt plus at least one output token must fit)")
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(params).__name__}")
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
        total = min(n + params.max_tokens, cfg.max_model_len)
        # the last token is sampled, never fed back: its K/V is never written, so it needs no slot
        need = (total - 1 + cfg.kvcache_block_size - 1) // cfg.kvcache_block_size
        if need > cfg.num_kvcache_blocks:
            raise ValueError(f"a sequence of {total} tokens needs {need} KV blocks but the cache has only "
                             f"{cfg.num_kvcache_blocks}; lower max_tokens or give the cache more memory")

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None) -> Sequence:
        if self.closed:
            raise RuntimeError("this LLM is closed")
        params = params or SamplingParams()
        token_ids = self.tokenize(prompt)
        self.validate(token_ids, params)
        seed = params.seed if params.seed is not None else self._rng.getrandbits(63)
        seq = Sequence(self._next_seq_id, token_ids, params, seed, self.config.kvcache_block_size)
        self._next_seq_id += 1
        self.seqs[seq.seq_id] = seq
        self.scheduler.add(seq)
        return seq

    def abort_request(self, seq_id: int) -> None:
        seq = self.seqs.pop(seq_id, None)
        if seq is not None and not seq.is_finished:
            self.scheduler.release(seq)
            seq.status = SequenceStatus.FINISHED
            seq.finish_reason = "abort"
            del seq.token_ids[seq.num_prompt_tokens + len(seq.output_token_ids):]   # in-flight tokens

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished() or self._inflight is not None

    # ---- the loop ------------------------------------------------------------------------------

    def step(self) -> list[StepOutput]:
        """Schedule and launch one step; return the tokens the host learned in this call.

        Synchronous: launch step N, wait for its tokens, process them.
        Async scheduling (lesson 11): launch step N, then process step N-1's tokens while the GPU
        runs step N, so the host's scheduling and bookkeeping hide behind GPU time. Sequences
        carry a PLACEHOLDER for a token in flight; step N reads it on the device."""
        batch = self.scheduler.schedule()
        launched = self._launch(batch) if batch.seqs else None
        if not self.async_scheduling:
            return self._resolve(launched) if launched else []
        previous, self._inflight = self._inflight, launched
        return self._resolve(previous) if previous else []

    def _launch(self, batch) -> tuple:
        handle = self.model_runner.run(batch)
        self.scheduler.postprocess(batch)
        indices = []
        for seq in handle.sampled:
            indices.append(len(seq.token_ids))
            seq.token_ids.append(PLACEHOLDER)
            if seq.num_output_tokens >= seq.sampling_params.max_tokens or len(seq) >= self.config.max_model_len:
                self.block_manager.register_computed_blocks(seq)   # before its blocks are freed
                self.scheduler.release(seq)      # finishes on "length" whatever the token: no more steps
        return batch, handle, indices

    def _resolve(self, launched: tuple) -> list[StepOutput]:
        batch, handle, indices = launched
        token_ids = handle.tokens()
        now = time.perf_counter()
        live = [(seq, idx, t) for seq, idx, t in zip(handle.sampled, indices, token_ids)
                if not seq.is_finished]           # aborted, or stopped at an earlier token
        for seq, idx, token_id in live:           # first every placeholder, so that an error in a
            seq.token_ids[idx] = token_id         # stop check below leaves no sequence half-known
        outputs = []
        for seq, idx, token_id in live:
            seq.record_token_time(now)
            self.num_generated_tokens += 1
            try:
                reason = self.check_stop(seq, idx)
            except Exception as e:            # this request's own failure: it alone finishes, with "error"
                logger.exception("the stop check of sequence %d failed", seq.seq_id)
                seq.error = f"{type(e).__name__}: {e}"
                reason = "error"
            if reason is not None:
                del seq.token_ids[idx + 1:]       # a token sampled after the stop is dropped
                self.block_manager.register_computed_blocks(seq)   # before its blocks are freed
                self.scheduler.release(seq)
                seq.status = SequenceStatus.FINISHED
                seq.finish_reason = reason
                self.seqs.pop(seq.seq_id, None)
            outputs.append(StepOutput(seq, [token_id], reason is not None))
        # every token before num_computed_tokens is known now: register full blocks in the prefix cache
        for seq in batch.seqs:
            if seq.block_table:
                self.block_manager.register_computed_blocks(seq)
        return outputs

    def check_stop(self, seq: Sequence, idx: int) -> str | None:
        """Finish reason for seq after its token at index idx, or None to go on."""
        p, token = seq.sampling_params, seq.token_ids[idx]
        if (not p.ignore_eos and token in self.config.eos_token_ids) or token in p.stop_token_ids:
            seq.stop_reason = token
            return "stop"
        num_output = idx + 1 - seq.num_prompt_tokens
        if p.stop_strings:
            window = max(map(len, p.stop_strings)) + 8
            tail = self.tokenizer.decode(seq.token_ids[max(seq.num_prompt_tokens, idx + 1 - window): idx + 1],
                                         skip_special_tokens=True)
            if any(s in tail for s in p.stop_strings):
                seq.stop_reason = next(s for s in p.stop_strings if s in tail)
                return "stop"
        if num_output >= p.max_tokens or idx + 1 >= self.config.max_model_len:
            return "length"
        return None

    def output_text(self, seq: Sequence) -> str:
        """The generated text: special tokens skipped, a stop string and what follows cut off."""
        if self.tokenizer is None:
            return ""
        ids = seq.output_token_ids
        if seq.finish_reason == "stop" and isinstance(seq.stop_reason, int):
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if isinstance(seq.stop_reason, str):
            text = text[: text.find(seq.stop_reason)] if seq.stop_reason in text else text
        return text

    def output(self, seq: Sequence) -> dict:
        ttft = None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time
        itl = [b - a for a, b in zip(seq.token_times, seq.token_times[1:])]
        return {
            "request_id": seq.seq_id,
            "text": self.output_text(seq),
            "token_ids": seq.output_token_ids,
            "prompt_token_ids": seq.prompt_token_ids,
            "finish_reason": seq.finish_reason,
            "num_cached_tokens": seq.num_cached_tokens,
            "metrics": {"ttft_s": ttft, "itl_s": itl, "num_preemptions": seq.num_preemptions},
        }

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
            "num_generated_tokens": self.num_generated_tokens,
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
        self.model_runner.close()
