"""The engine's side of the server: one loop owns the LLMEngine and serves every HTTP request.

    event loop (AsyncEngine)                          EngineLoop
    ("add", id, RequestSpec), ("abort", id)  -inbox->  admit (validate token ids), add_request;
                                                       step() while any request is live
    route events to each request's queue  <-send(Batch)-  Accepted / Delta / Failed, by request id

It runs in a thread of the server's process (create_app(llm): tests, lessons) or in a process of
its own (`python -m aios.server`, engine_process.py). LLMEngine is not thread-safe and step()
blocks for a whole forward pass, so the engine is touched by this loop only. In its own process
the loop does not share a GIL with the event loop writing the streams: while the event loop
serializes chunks, the engine keeps launching steps.

What stays true:
- The sequences of every HTTP request share one continuous batch: one step() serves them all.
- A request's first event is Accepted or Failed; after Accepted come Deltas until each of its
  choices has finished, or one Failed (then its sequences have already left the engine).
- A choice's Deltas, concatenated, carry all its output token ids and its text. A Delta goes out
  once stream_interval tokens have piled up since the last one (the first token at once; the last
  Delta, with finish_reason, always), and only if it carries text, unless the request wants token
  ids or logprobs. A Delta's logprobs score its token_ids; a choice's first Delta carries the
  prompt's scores when the request asks for prompt_logprobs.
  stream_interval > 1 trades smoothness for fewer chunks: each costs the event loop ~60 us.
- A prompt's n choices are one engine request (its samples share one prefill: seq.group). With
  best_of > n (never streamed) its best_of samples run silent and, once all have finished, the n
  best go out whole, one Delta each.
- An aborted request's sequences leave the engine, blocks freed, before the next step.
- An exception in step() fails the requests that were in the batch (500); the loop goes on. A
  sequence that step() finished with finish_reason "error" (its own failure, `seq.error` says
  which) fails its request alone, as does a failure to detokenize it.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aios.engine.detokenizer import IncrementalDetokenizer
from aios.engine.sequence import SequenceStatus
from aios.llm import LLM
from aios.sampling_params import SamplingParams
from aios.server.metrics import EngineCounters
from aios.server.protocol import REQUEST_FIELDS, APIError, param_of
from aios.server.stream import Accepted, Delta, Failed, RequestSpec

logger = logging.getLogger("aios.server")

Event = Accepted | Delta | Failed


@dataclass
class Batch:
    """What one pass of the loop sends: events by request id, then the engine's state after it."""

    events: list[tuple[int, Event]]
    stats: dict                               # LLMEngine.stats()
    counters: EngineCounters                  # the loop's own (a thread runner hands on a copy)


@dataclass(eq=False)
class _Request:
    request_id: int
    spec: RequestSpec
    seq_ids: list[int] = field(default_factory=list)


@dataclass
class _Choice:
    request: _Request
    index: int                                # prompt_index * n + sample_index (held: prompt_index * n)
    detokenizer: IncrementalDetokenizer
    held: bool = False                        # best_of > n: sent whole once the n best are known
    has_first_token: bool = False
    num_sent_tokens: int = 0                  # output tokens already in a Delta
    pending_text: str = ""                    # detokenized, not yet in a Delta (stream_interval)
    sent_prompt_logprobs: bool = False        # the first Delta carries them


class EngineLoop:
    def __init__(self, engine: LLM, send: Callable[[Batch], None], max_waiting: int = 512,
                 stream_interval: int = 1) -> None:
        self.engine, self.send = engine, send
        self.max_waiting, self.stream_interval = max_waiting, stream_interval
        self.counters = EngineCounters()
        cfg = engine.config
        self._max_len = min(cfg.max_model_len, engine.num_kvcache_blocks * cfg.kvcache_block_size)
        self._requests: dict[int, _Request] = {}  # request id -> its live sequences
        self._live: dict[int, _Choice] = {}       # seq_id -> its request and detokenizer
        self._outbox: list[tuple[int, Event]] = []

    def run(self, inbox: queue.Queue) -> None:
        """Serve commands until ("stop", None, None); `inbox` is a queue.Queue or a multiprocessing.Queue."""
        running, commands = True, []
        while running:
            try:
                commands = self._take_commands(inbox)
                for command, request_id, spec in commands:
                    if command == "stop":
                        running = False
                    elif command == "add":
                        self._add(_Request(request_id, spec))
                    elif (request := self._requests.get(request_id)) is not None:
                        self._abort(request)
                self._flush()                 # acceptances and refusals go out before the step
                if running and self.engine.has_unfinished_requests():
                    self._step()
            except Exception as e:            # a bug here must not end the loop silently
                logger.exception("engine loop error; failing every live request")
                self._fail_all(APIError(500, f"engine loop error: {type(e).__name__}: {e}", type="server_error"))
            self._flush(stats_changed=bool(commands) or self.engine.has_unfinished_requests())
        self._fail_all(APIError(503, "the server is shutting down", type="server_error"))
        self._flush(stats_changed=True)

    def _take_commands(self, inbox: queue.Queue) -> list[tuple]:
        commands = [] if self.engine.has_unfinished_requests() else [inbox.get()]   # idle: wait
        while True:
            try:
                commands.append(inbox.get_nowait())
            except queue.Empty:
                return commands

    # ---- requests in, sequences out --------------------------------------------------------------

    def _admit(self, spec: RequestSpec) -> list[SamplingParams]:
        """Validate every prompt of the request, or raise: all or nothing is queued. The API side
        tokenized them (aios/server/prompts.py): a long text stalls no step here."""
        num_new = spec.num_choices
        if num_new > self.max_waiting:
            raise APIError(400, f"the request asks for {num_new} sequences (prompts x n) but the server queues "
                                f"at most {self.max_waiting} (--max-waiting)", param="n")
        num_waiting = len(self.engine.scheduler.waiting)
        if num_waiting + num_new > self.max_waiting:
            raise APIError(429, f"{num_waiting} sequences are waiting and this request adds {num_new}, over the "
                                f"bound of {self.max_waiting}; retry later", type="rate_limit_error",
                           code="too_many_waiting_requests", headers={"Retry-After": "1"})
        params = []
        for ids in spec.prompt_token_ids:
            p = spec.params
            if spec.fill_max_tokens:
                p = dataclasses.replace(p, max_tokens=max(1, self._max_len - len(ids)))
            self.engine.validate(ids, p)
            params.append(p)
        return params

    def _add(self, request: _Request) -> None:
        spec, token_ids = request.spec, request.spec.prompt_token_ids
        try:
            params = self._admit(spec)
            n = spec.params.n
            self._requests[request.request_id] = request
            for i, (ids, p) in enumerate(zip(token_ids, params)):
                parent = self.engine.add_request(ids, p)      # n samples: one group, one prefill
                samples = parent.group.seqs if parent.group is not None else [parent]
                held = len(samples) > n
                for j, seq in enumerate(samples):
                    index = i * n if held else i * n + j            # held: the prompt's first choice
                    self._live[seq.seq_id] = _Choice(request, index, IncrementalDetokenizer(self.engine, seq), held)
                    request.seq_ids.append(seq.seq_id)
        except APIError as e:
            self._fail(request, e)            # aborts what was added already
            return
        except (ValueError, TypeError) as e:
            message = str(e).removeprefix("SamplingParams: ")
            default = "messages" if spec.chat else "prompt"
            self._fail(request, APIError(400, message, param=param_of(message, REQUEST_FIELDS, default)))
            return
        self.counters.prompt_tokens += sum(map(len, token_ids))
        self._emit(request, Accepted([len(ids) for ids in token_ids]))

    def _abort(self, request: _Request) -> None:
        for seq_id in request.seq_ids:
            if self._live.pop(seq_id, None) is not None:
                self.engine.abort_request(seq_id)
                self.counters.finished["abort"] += 1
        self._requests.pop(request.request_id, None)

    def _fail(self, request: _Request, error: APIError) -> None:
        for seq_id in request.seq_ids:
            if self._live.pop(seq_id, None) is not None:
                try:
                    self.engine.abort_request(seq_id)
                except Exception:             # the client hears of its failure whatever the engine does
                    logger.exception("aborting sequence %d failed", seq_id)
        self._requests.pop(request.request_id, None)
        self._emit(request, Failed(error))

    def _fail_all(self, error: APIError) -> None:
        for request in list(self._requests.values()):
            self._fail(request, error)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:
            # The batch is every sequence past WAITING: running, or finished inside the failed step
            # (its output lost). Waiting sequences were not touched and go on.
            logger.exception("engine step failed; failing the requests in its batch")
            error = APIError(500, f"the engine failed running this request: {type(e).__name__}: {e}",
                             type="server_error", code="engine_error")
            batch = {id(c.request): c.request for c in self._live.values()
                     if c.detokenizer.seq.status not in (SequenceStatus.WAITING, SequenceStatus.PENDING_FORK)}
            for request in batch.values():
                self._fail(request, error)
            return
        now = time.perf_counter()
        for out in outputs:
            seq = out.seq
            choice = self._live.get(seq.seq_id)
            if choice is None:
                continue                      # its request failed earlier in this pass
            request = choice.request
            if out.finished and seq.finish_reason == "error":
                # LLMEngine.step finished this sequence alone, for a failure of its own (a stop
                # check, ...); the others in the step go on. Its request fails, its other choices too.
                logger.error("sequence %d failed: %s", seq.seq_id, getattr(seq, "error", None))
                self.counters.finished["error"] += 1
                self._fail(request, APIError(500, f"the engine failed on this request: "
                                                  f"{getattr(seq, 'error', None) or 'unknown error'}",
                                             type="server_error", code="engine_error"))
                continue
            if not choice.has_first_token:
                choice.has_first_token = True
                self.counters.ttft.observe(now - request.spec.arrival_time)
            if choice.held:
                if out.finished:
                    self._finish_held(choice)
                continue
            try:
                text = choice.detokenizer.step()
            except Exception as e:
                logger.exception("detokenization failed")
                self._fail(request, APIError(500, f"detokenization failed: {e}", type="server_error"))
                continue
            choice.pending_text += text
            num_known = seq.num_known_output_tokens
            params = seq.sampling_params
            if not out.finished:
                if choice.num_sent_tokens and num_known - choice.num_sent_tokens < self.stream_interval:
                    continue                  # not due: the first delta and every stream_interval-th go out
                if not (choice.pending_text or request.spec.return_token_ids or params.logprobs is not None):
                    continue
            token_ids = seq.output_token_ids_since(choice.num_sent_tokens)
            # the scores travel as the engine keeps them: the API side turns them into text
            logprobs = seq.output_logprobs[choice.num_sent_tokens:num_known] if params.logprobs is not None else None
            prompt_logprobs = (list(seq.prompt_logprobs) if params.prompt_logprobs is not None
                               and not choice.sent_prompt_logprobs else None)
            choice.sent_prompt_logprobs = True
            choice.num_sent_tokens = num_known
            text, choice.pending_text = choice.pending_text, ""
            if out.finished:
                del self._live[seq.seq_id]
                self.counters.finished[seq.finish_reason] += 1
                if not any(s in self._live for s in request.seq_ids):
                    self._requests.pop(request.request_id, None)
                self._emit(request, Delta(choice.index, text, token_ids, seq.finish_reason, choice.detokenizer.sent,
                                          num_known, logprobs, prompt_logprobs))
            else:
                self._emit(request, Delta(choice.index, text, token_ids, logprobs=logprobs,
                                          prompt_logprobs=prompt_logprobs))

    def _finish_held(self, choice: _Choice) -> None:
        """A sample of a best_of > n request finished; once all have, send the n best, whole."""
        seq, request = choice.detokenizer.seq, choice.request
        del self._live[seq.seq_id]
        self.counters.finished[seq.finish_reason] += 1
        group = seq.group
        if not group.is_finished:
            return
        if not any(s in self._live for s in request.seq_ids):
            self._requests.pop(request.request_id, None)
        for rank, s in enumerate(group.outputs()):
            text, params = self.engine.output_text(s), s.sampling_params
            self._emit(request, Delta(choice.index + rank, text, s.output_token_ids, s.finish_reason, text,
                                      s.num_known_output_tokens,
                                      list(s.output_logprobs) if params.logprobs is not None else None,
                                      list(s.prompt_logprobs) if params.prompt_logprobs is not None else None))

    def _emit(self, request: _Request, event: Event) -> None:
        self._outbox.append((request.request_id, event))

    def _flush(self, stats_changed: bool = False) -> None:
        """Send this pass's events, with the engine's stats and counters after it (one message)."""
        if self._outbox or stats_changed:
            batch, self._outbox = self._outbox, []
            self.send(Batch(batch, self.engine.stats(), self.counters))
