"""One engine loop for many HTTP requests: a background thread owns the LLMEngine.

    HTTP handler (event loop)                       engine thread
    -------------------------                       -------------
    await async_engine.generate(...)  --inbox-->    take commands: add / abort requests
                                                    step() while any request is live
    async for delta in stream  <--call_soon_threadsafe--  detokenize each new token, send deltas

Why a thread: LLMEngine is not thread-safe and step() blocks for a whole forward pass, while the
event loop must keep accepting connections and writing SSE. So everything that touches the engine
(tokenize, validate, add_request, step, abort_request) runs on the engine thread; a handler only
puts commands into a thread-safe queue and reads its own asyncio queue of events.

What stays true:
- The sequences of every HTTP request share one continuous batch: one step() serves them all.
- A request's first event is Accepted or Failed; after Accepted come Deltas until each of its
  choices has finished, or one Failed (then its sequences have already left the engine).
- A choice's Deltas, concatenated, carry all its output token ids and its text. A Delta goes out
  once stream_interval tokens have piled up since the last one (the first token at once; the last
  Delta, with finish_reason, always), and only if it carries text, unless the request wants token ids.
  stream_interval > 1 trades smoothness for fewer chunks: each costs the event loop ~60 us.
- An aborted request's sequences leave the engine, blocks freed, before the next step.
- An exception in step() fails the requests that were in the batch (500); the loop goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass

from jinja2 import TemplateError

from aios.engine.sequence import SequenceStatus
from aios.llm import LLM
from aios.sampling_params import SamplingParams
from aios.server.detokenizer import IncrementalDetokenizer
from aios.server.metrics import ServerMetrics
from aios.server.protocol import APIError, params_of_choice
from aios.server.stream import Accepted, Delta, Failed, Prompt, RequestStream, ServerRequest

logger = logging.getLogger("aios.server")

@dataclass
class _Choice:
    request: ServerRequest
    index: int
    detokenizer: IncrementalDetokenizer
    has_first_token: bool = False
    num_sent_tokens: int = 0                  # output tokens already in a Delta
    pending_text: str = ""                    # detokenized, not yet in a Delta (stream_interval)


def _deliver(items: list[tuple[asyncio.Queue, object]]) -> None:
    for events, event in items:
        events.put_nowait(event)


class AsyncEngine:
    def __init__(self, engine: LLM, max_waiting: int, metrics: ServerMetrics, stream_interval: int = 1) -> None:
        if stream_interval < 1:
            raise ValueError(f"stream_interval must be >= 1, got {stream_interval}")
        self.engine, self.max_waiting, self.metrics = engine, max_waiting, metrics
        self.stream_interval = stream_interval    # a choice's Deltas carry this many tokens (first and last: any)
        self.stats = engine.stats()           # snapshot the engine thread refreshes every pass
        cfg = engine.config
        self._max_len = min(cfg.max_model_len, cfg.num_kvcache_blocks * cfg.kvcache_block_size)
        self._inbox: queue.Queue = queue.Queue()
        self._live: dict[int, _Choice] = {}   # seq_id -> its request and detokenizer (engine thread only)
        self._outbox: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue, object]] = []
        self._thread: threading.Thread | None = None

    # ---- event-loop side -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aios-engine-loop", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(("stop", None))
            self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def generate(self, prompts: list[Prompt], params: SamplingParams, *, chat: bool, fill_max_tokens: bool,
                       arrival_time: float, return_token_ids: bool = False) -> RequestStream:
        """Submit one request; returns once the engine thread accepted it, raises APIError if refused."""
        if not self.is_alive:
            raise APIError(503, "the engine loop is not running", type="server_error")
        request = ServerRequest(prompts, params, chat, fill_max_tokens, return_token_ids, arrival_time,
                           asyncio.get_running_loop())
        self._inbox.put(("add", request))
        try:
            event = await request.events.get()
        except asyncio.CancelledError:
            self._inbox.put(("abort", request))
            raise
        if isinstance(event, Failed):
            raise event.error
        return RequestStream(request, event, abort=lambda: self._inbox.put(("abort", request)))

    # ---- engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        running = True
        while running:
            try:
                for command, request in self._take_commands(block=not self.engine.has_unfinished_requests()):
                    if command == "stop":
                        running = False
                    elif command == "add":
                        self._add(request)
                    else:
                        self._abort(request)
                self._flush()                 # acceptances and refusals go out before the step
                if running and self.engine.has_unfinished_requests():
                    self._step()
                self.stats = self.engine.stats()
            except Exception as e:            # a bug here must not end the loop silently
                logger.exception("engine loop error; failing every live request")
                self._fail_all(APIError(500, f"engine loop error: {type(e).__name__}: {e}", type="server_error"))
            self._flush()
        self._fail_all(APIError(503, "the server is shutting down", type="server_error"))
        self._flush()

    def _take_commands(self, block: bool) -> list[tuple[str, ServerRequest | None]]:
        commands = [self._inbox.get()] if block else []
        while True:
            try:
                commands.append(self._inbox.get_nowait())
            except queue.Empty:
                return commands

    def _admit(self, request: ServerRequest) -> tuple[list[list[int]], list[SamplingParams]]:
        """Tokenize and validate every prompt of the request, or raise: all or nothing is queued."""
        num_new = len(request.prompts) * request.params.n
        if num_new > self.max_waiting:
            raise APIError(400, f"the request asks for {num_new} sequences (prompts x n) but the server queues "
                                f"at most {self.max_waiting} (--max-waiting)", param="n")
        num_waiting = len(self.engine.scheduler.waiting)
        if num_waiting + num_new > self.max_waiting:
            raise APIError(429, f"{num_waiting} sequences are waiting and this request adds {num_new}, over the "
                                f"bound of {self.max_waiting}; retry later", type="rate_limit_error",
                           code="too_many_waiting_requests", headers={"Retry-After": "1"})
        token_ids, params = [], []
        for prompt in request.prompts:
            ids = self.engine.apply_chat_template(prompt) if request.chat else self.engine.tokenize(prompt)
            p = request.params
            if request.fill_max_tokens:
                p = dataclasses.replace(p, max_tokens=max(1, self._max_len - len(ids)))
            self.engine.validate(ids, p)
            token_ids.append(ids)
            params.append(p)
        return token_ids, params

    def _add(self, request: ServerRequest) -> None:
        try:
            token_ids, params = self._admit(request)
        except APIError as e:
            self._fail(request, e)
            return
        except (ValueError, TypeError, TemplateError) as e:
            self._fail(request, APIError(400, str(e), param="messages" if request.chat else "prompt"))
            return
        n = request.params.n
        for i, (ids, p) in enumerate(zip(token_ids, params)):
            for j in range(n):
                seq = self.engine.add_request(ids, params_of_choice(p, j))
                self._live[seq.seq_id] = _Choice(request, i * n + j, IncrementalDetokenizer(self.engine, seq))
                request.seq_ids.append(seq.seq_id)
        self.metrics.count_prompt_tokens(sum(map(len, token_ids)))
        self._emit(request, Accepted([len(ids) for ids in token_ids]))

    def _abort(self, request: ServerRequest) -> None:
        for seq_id in request.seq_ids:
            if self._live.pop(seq_id, None) is not None:
                self.engine.abort_request(seq_id)
                self.metrics.count_finished("abort")

    def _fail(self, request: ServerRequest, error: APIError) -> None:
        for seq_id in request.seq_ids:
            if self._live.pop(seq_id, None) is not None:
                try:
                    self.engine.abort_request(seq_id)
                except Exception:             # the client hears of its failure whatever the engine does
                    logger.exception("aborting sequence %d failed", seq_id)
        self._emit(request, Failed(error))

    def _fail_all(self, error: APIError) -> None:
        for request in {id(c.request): c.request for c in self._live.values()}.values():
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
                     if c.detokenizer.seq.status != SequenceStatus.WAITING}
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
            if not choice.has_first_token:
                choice.has_first_token = True
                self.metrics.observe_ttft(now - request.arrival_time)
            try:
                text = choice.detokenizer.step()
            except Exception as e:
                logger.exception("detokenization failed")
                self._fail(request, APIError(500, f"detokenization failed: {e}", type="server_error"))
                continue
            choice.pending_text += text
            ids = seq.output_token_ids
            if not out.finished:
                if choice.num_sent_tokens and len(ids) - choice.num_sent_tokens < self.stream_interval:
                    continue                  # not due: the first delta and every stream_interval-th go out
                if not (choice.pending_text or request.return_token_ids):
                    continue
            token_ids, choice.num_sent_tokens = ids[choice.num_sent_tokens:], len(ids)
            text, choice.pending_text = choice.pending_text, ""
            if out.finished:
                del self._live[seq.seq_id]
                self.metrics.count_finished(seq.finish_reason)
                self._emit(request, Delta(choice.index, text, token_ids, seq.finish_reason, choice.detokenizer.sent,
                                          len(ids)))
            else:
                self._emit(request, Delta(choice.index, text, token_ids))

    def _emit(self, request: ServerRequest, event: object) -> None:
        self._outbox.append((request.loop, request.events, event))

    def _flush(self) -> None:
        """Hand this pass's events to their event loops: one wake-up per loop, not one per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for loop, events, event in self._outbox:
            by_loop.setdefault(loop, []).append((events, event))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:              # that loop is closed: its clients are gone
                pass
