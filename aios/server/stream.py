"""What a request is on its way through the server: what the engine loop is told (RequestSpec),
the events it sends back (Accepted, then Deltas, or Failed), and the handler's end of them
(RequestStream). Specs and events are plain picklable data: the engine loop may run in a process
of its own (aios/server/engine_loop.py).

A request's events go into its own asyncio queue, on its event loop: AsyncEngine routes them there
by request id, the handler takes them out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aios.sampling_params import SamplingParams
from aios.server.protocol import APIError


@dataclass
class Accepted:
    prompt_token_counts: list[int]            # per prompt (not per choice)


@dataclass
class Delta:
    index: int                                # choice index: prompt_index * n + sample_index
    text: str                                 # new text, possibly ""
    token_ids: list[int]                      # output tokens not in an earlier Delta of this choice
    finish_reason: str | None = None          # set on the choice's last delta, with ...
    final_text: str | None = None             # ... its whole text (LLMEngine.output_text) ...
    num_output_tokens: int = 0                # ... and its number of generated tokens
    logprobs: list | None = None              # scores of token_ids (TokenLogprobs each), when asked
    prompt_logprobs: list | None = None       # the prompt's scores (first None), on the choice's first Delta


@dataclass
class Failed:
    error: APIError


@dataclass
class RequestSpec:
    """One HTTP request as the engine loop needs it: tokenized already (aios/server/prompts.py)."""

    prompt_token_ids: list[list[int]]         # per prompt
    params: SamplingParams
    chat: bool                                # the prompt came from messages: errors name "messages"
    fill_max_tokens: bool                     # no max_tokens given: up to the context length
    return_token_ids: bool                    # a Delta for every due step, not only for new text
    arrival_time: float                       # time.perf_counter(): CLOCK_MONOTONIC, one clock per host

    @property
    def num_choices(self) -> int:
        return len(self.prompt_token_ids) * self.params.n


class RequestStream:
    """The handler's end of one accepted request: iterate its Deltas; abort() if the client leaves."""

    def __init__(self, spec: RequestSpec, events: asyncio.Queue, accepted: Accepted,
                 abort: Callable[[], None]) -> None:
        self._events, self._abort = events, abort
        self.num_choices = spec.num_choices
        self.prompt_tokens = sum(accepted.prompt_token_counts)
        self._unfinished = self.num_choices

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Delta:
        if self._unfinished == 0:
            raise StopAsyncIteration
        return self._take(await self._events.get())

    def ready(self) -> list[Delta]:
        """The Deltas already queued, without waiting: a writer that fell behind the engine sends
        them in one write instead of one write per token."""
        deltas = []
        while self._unfinished and not self._events.empty():
            deltas.append(self._take(self._events.get_nowait()))
        return deltas

    def _take(self, event: Delta | Failed) -> Delta:
        if isinstance(event, Failed):
            self._unfinished = 0
            raise event.error
        if event.finish_reason is not None:
            self._unfinished -= 1
        return event

    def abort(self) -> None:
        """Free the request's sequences now (a no-op once every choice has finished)."""
        if self._unfinished:
            self._unfinished = 0
            self._abort()
