"""Lesson 15: the OpenAI wire format of one streamed request: Server-Sent Events (SSE).

A streamed response is a sequence of events `data: {json}\\n\\n`: for chat, first one role chunk per
choice; then one chunk per piece of new text (a `Delta` from the engine), each choice's last
carrying its finish_reason; then, if the client asked (`stream_options.include_usage`), one chunk
with no choices and the usage; then `data: [DONE]\\n\\n`.

Your ResponseBuilder is aios's (aios/server/responses.py: __init__ sets self.model, self.chat,
self.return_token_ids, self.id, self.created; _envelope(object_, choices) makes the
{"id", "object", "created", "model", "choices"} head; response() builds whole bodies) with the
stream's chunks left to you. Key order matters: the checks compare your bytes with the server's.
Check: python lessons/check.py 15
"""

from __future__ import annotations

from aios.server.responses import DONE  # noqa: F401  ("data: [DONE]\n\n": yours to use)
from aios.server.responses import ResponseBuilder as _AiosResponseBuilder
from aios.server.stream import Delta


def sse(body: dict) -> str:
    """One SSE event: "data: " + the JSON of body + a blank line ("\\n\\n"). JSON as json.dumps
    writes it by default (", " and ": " separators), but with ensure_ascii=False, so "é" stays "é".
    (lessons/15_server/README.md, "Build it: sse")"""
    raise NotImplementedError("lesson 15: sse (see README, 'Build it')")


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """{"prompt_tokens", "completion_tokens", "total_tokens"} in that order."""
    raise NotImplementedError("lesson 15: usage (see README, 'Build it')")


class ResponseBuilder(_AiosResponseBuilder):
    def _chunk(self, index: int, delta: dict | str, token_ids: list[int], finish_reason: str | None,
               include_usage: bool) -> dict:
        """The body of one stream chunk for choice `index`.

        Chat: self._envelope("chat.completion.chunk", [choice]) with choice {"index", "delta": delta
        (a dict), "logprobs": None, "finish_reason"}. Text: self._envelope("text_completion",
        [choice]) with choice {"index", "text": delta (a str), "logprobs": None, "finish_reason"}.
        With self.return_token_ids the choice also gets "token_ids" (last). With include_usage the
        body gets "usage": None (OpenAI: null on every chunk but the last). (README, "Build it: chunks")"""
        raise NotImplementedError("lesson 15: ResponseBuilder._chunk (see README, 'Build it')")

    def role_chunk(self, index: int, include_usage: bool) -> dict:
        """Chat streams open each choice with a chunk whose delta is {"role": "assistant",
        "content": ""}, no token ids, no finish_reason."""
        raise NotImplementedError("lesson 15: ResponseBuilder.role_chunk (see README, 'Build it')")

    def delta_event(self, index: int, text: str, token_ids: list[int], finish_reason: str | None,
                    include_usage: bool) -> str:
        """The SSE event (a str) of one delta: exactly sse() of its chunk body. Chat: the delta is
        {"content": text}, or {} when text is "" (a finish chunk often carries no text). Text
        completions: the text itself. (aios writes this from a head serialized once per response,
        since it runs for every token of every stream; sse(self._chunk(...)) gives the same bytes.)"""
        raise NotImplementedError("lesson 15: ResponseBuilder.delta_event (see README, 'Build it')")

    def usage_chunk(self, usage_: dict) -> dict:
        """The last chunk when the client asked for usage: the envelope ("chat.completion.chunk" or
        "text_completion") with no choices, and "usage": usage_."""
        raise NotImplementedError("lesson 15: ResponseBuilder.usage_chunk (see README, 'Build it')")


def stream_events(builder: ResponseBuilder, deltas: list[Delta], prompt_tokens: int, include_usage: bool,
                  num_choices: int = 1) -> list[str]:
    """Every SSE event of one streamed request, in order, as the server writes them (the events of
    `sse_events` in aios/server/app.py): for chat one role chunk per choice (0..num_choices-1); one
    delta_event per Delta (its index, text, token_ids, finish_reason); if include_usage the usage
    chunk, whose completion_tokens is the sum of num_output_tokens over the finishing Deltas (those
    with a finish_reason); and DONE. (README, "Build it: one stream")"""
    raise NotImplementedError("lesson 15: stream_events (see README, 'Build it')")
