"""The event loop's end of the engine loop (engine_loop.py): submit requests, route events back.

    create_app(llm)          AsyncEngine.in_thread(llm):       the loop in a thread of this process
    python -m aios.server    AsyncEngine.in_process(model):    the loop in a process of its own

Either way a handler sees the same thing: `await generate(...)` returns a RequestStream, or raises
the APIError that refused the request; `stats` and `counters` are the loop's latest copies.

Routing: every request gets an id. The loop sends Batches of (id, event); `_deliver`, on the thread
that receives them, looks up each id's route (its event loop and asyncio queue) and hands the events
over with one call_soon_threadsafe per event loop per batch. A route leaves when its request has
failed, finished every choice or been aborted; events for a route that left are dropped.

A client that stops reading its stream stops its writer (the socket's buffers are full), and its
events pile up in its queue while its sequences hold KV blocks to max_tokens. Past
`max_stream_backlog` unread events per choice the request is aborted, its blocks freed, and its
queue emptied down to one Failed.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from aios.llm import LLM
from aios.sampling_params import SamplingParams
from aios.server.engine_loop import Batch
from aios.server.engine_process import EngineInfo, ProcessRunner, ThreadRunner
from aios.server.metrics import EngineCounters
from aios.server.protocol import APIError
from aios.server.stream import Delta, Failed, RequestSpec, RequestStream

DEFAULT_MAX_STREAM_BACKLOG = 1024            # unread events per choice (a token each, at stream_interval 1)


@dataclass(eq=False)
class _Route:
    request_id: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    unfinished: int                           # choices without their last Delta yet
    max_backlog: int                          # unread events before the request is aborted
    overflowed: bool = False                  # aborted for its backlog: its queue holds one Failed


class AsyncEngine:
    def __init__(self, runner: ThreadRunner | ProcessRunner,
                 max_stream_backlog: int = DEFAULT_MAX_STREAM_BACKLOG) -> None:
        if max_stream_backlog < 1:
            raise ValueError(f"max_stream_backlog must be >= 1, got {max_stream_backlog}")
        self._runner = runner
        self.info: EngineInfo = runner.info
        self.tokenizer = runner.tokenizer     # the API side's (aios/server/prompts.py), or None
        self.max_stream_backlog = max_stream_backlog
        self.stats: dict = {}                 # the loop's latest LLMEngine.stats()
        self.counters = EngineCounters()      # the loop's latest counters
        self._routes: dict[int, _Route] = {}  # set on event loops, read on the delivering thread (GIL-atomic ops)
        self._ids = itertools.count()
        self._gone = False                    # the engine's process ended: set before its routes are failed

    @classmethod
    def in_thread(cls, engine: LLM, max_waiting: int = 512, stream_interval: int = 1,
                  max_stream_backlog: int = DEFAULT_MAX_STREAM_BACKLOG) -> AsyncEngine:
        return cls(ThreadRunner(engine, max_waiting, stream_interval), max_stream_backlog)

    @classmethod
    def in_process(cls, model: str | None, engine_kwargs: dict, max_waiting: int = 512,
                   stream_interval: int = 1, max_stream_backlog: int = DEFAULT_MAX_STREAM_BACKLOG) -> AsyncEngine:
        """Start the engine's process and wait until its model is loaded (raises RuntimeError if it
        cannot start: the child's error)."""
        return cls(ProcessRunner(model, engine_kwargs, max_waiting, stream_interval), max_stream_backlog)

    def start(self) -> None:
        self._runner.start(self._deliver, self._engine_gone)

    def shutdown(self, timeout: float = 30.0) -> None:
        self._runner.stop(timeout)

    @property
    def is_alive(self) -> bool:
        return self._runner.is_alive

    async def generate(self, prompt_token_ids: list[list[int]], params: SamplingParams, *, fill_max_tokens: bool,
                       arrival_time: float, chat: bool = False, return_token_ids: bool = False) -> RequestStream:
        """Submit one request (its prompts tokenized); returns once the engine loop accepted it,
        raises APIError if refused."""
        if not self.is_alive:
            raise APIError(503, "the engine loop is not running", type="server_error")
        spec = RequestSpec(prompt_token_ids, params, chat, fill_max_tokens, return_token_ids, arrival_time)
        request_id, events = next(self._ids), asyncio.Queue()
        self._routes[request_id] = _Route(request_id, asyncio.get_running_loop(), events, spec.num_choices,
                                          self.max_stream_backlog * spec.num_choices)
        if self._gone:                        # registered after _engine_gone failed the others
            self._routes.pop(request_id, None)
            raise APIError(503, "the engine loop is not running", type="server_error")
        self._runner.put(("add", request_id, spec))
        try:
            event = await events.get()
        except asyncio.CancelledError:
            self._abort(request_id)
            raise
        if isinstance(event, Failed):
            raise event.error
        return RequestStream(spec, events, event, abort=lambda: self._abort(request_id))

    def _abort(self, request_id: int) -> None:
        self._routes.pop(request_id, None)
        self._runner.put(("abort", request_id, None))

    def _deliver(self, batch: Batch) -> None:
        """On the engine thread or the process's reader thread: hand each event to its request."""
        self.stats, self.counters = batch.stats, batch.counters
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for request_id, event in batch.events:
            route = self._routes.get(request_id)
            if route is None:
                continue                      # its client left
            by_loop.setdefault(route.loop, []).append((route, event))
            if isinstance(event, Delta) and event.finish_reason is not None:
                route.unfinished -= 1
            if isinstance(event, Failed) or route.unfinished == 0:
                self._routes.pop(request_id, None)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._put_all, items)
            except RuntimeError:              # that loop is closed: its clients are gone
                pass

    def _put_all(self, items: list[tuple[_Route, object]]) -> None:
        """On the route's event loop: queue each event; abort a request whose client stopped reading."""
        for route, event in items:
            if route.overflowed:
                continue
            route.events.put_nowait(event)
            if route.events.qsize() > route.max_backlog:
                route.overflowed = True
                self._abort(route.request_id)     # a no-op in the loop if the request has finished
                while not route.events.empty():
                    route.events.get_nowait()
                route.events.put_nowait(Failed(APIError(
                    500, f"the client left more than {route.max_backlog} events of its stream unread "
                         "(--max-stream-backlog): the request was aborted", type="server_error",
                    code="stream_backlog_exceeded")))

    def _engine_gone(self) -> None:
        """The engine's process ended without being asked to: fail whatever still waits on it."""
        self._gone = True
        error = APIError(500, "the engine process exited", type="server_error", code="engine_error")
        self._deliver(Batch([(request_id, Failed(error)) for request_id in list(self._routes)], self.stats,
                            self.counters))
