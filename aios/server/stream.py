"""What a request is on its way through the server: the events the engine thread sends back
(Accepted, then Deltas, or Failed) and the handler's end of them (RequestStream).

A request's events go into its own asyncio queue, on its event loop; the engine thread puts them
there (AsyncEngine._flush), the handler takes them out. ServerRequest is what both sides share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aios.sampling_params import SamplingParams
from aios.server.protocol import APIError

Prompt = str | list[int] | list[dict[str, str]]      # text, token ids, or a chat conversation


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


@dataclass
class Failed:
    error: APIError


@dataclass(eq=False)
class ServerRequest:
    """One HTTP request as the engine thread sees it."""

    prompts: list[Prompt]
    params: SamplingParams
    chat: bool
    fill_max_tokens: bool                     # no max_tokens given: up to the context length
    return_token_ids: bool                    # a Delta for every step with a token, not only for new text
    arrival_time: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    seq_ids: list[int] = field(default_factory=list)


class RequestStream:
    """The handler's end of one accepted request: iterate its Deltas; abort() if the client leaves."""

    def __init__(self, request: ServerRequest, accepted: Accepted, abort: Callable[[], None]) -> None:
        self._request, self._abort = request, abort
        self.num_choices = len(request.prompts) * request.params.n
        self.prompt_tokens = sum(accepted.prompt_token_counts)
        self._unfinished = self.num_choices

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Delta:
        if self._unfinished == 0:
            raise StopAsyncIteration
        return self._take(await self._request.events.get())

    def ready(self) -> list[Delta]:
        """The Deltas already queued, without waiting: a writer that fell behind the engine sends
        them in one write instead of one write per token."""
        deltas = []
        while self._unfinished and not self._request.events.empty():
            deltas.append(self._take(self._request.events.get_nowait()))
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
