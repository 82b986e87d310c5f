"""Reference for lesson 15: aios's OpenAI wire format (aios/server/responses.py: sse, usage,
ResponseBuilder) and the order the server writes one stream's events in (`sse_events` in
aios/server/app.py, which `stream_events` below follows over a list of Deltas instead of a live
RequestStream)."""

from __future__ import annotations

from aios.server.responses import DONE, ResponseBuilder, sse, usage
from aios.server.stream import Delta

__all__ = ["DONE", "ResponseBuilder", "sse", "stream_events", "usage"]


def stream_events(builder: ResponseBuilder, deltas: list[Delta], prompt_tokens: int, include_usage: bool,
                  num_choices: int = 1) -> list[str]:
    events = [sse(builder.role_chunk(i, include_usage)) for i in range(num_choices)] if builder.chat else []
    completion_tokens = [0] * num_choices
    for delta in deltas:
        if delta.finish_reason is not None:
            completion_tokens[delta.index] = delta.num_output_tokens
        events.append(builder.delta_event(delta.index, delta.text, delta.token_ids, delta.finish_reason,
                                          include_usage))
    if include_usage:
        events.append(sse(builder.usage_chunk(usage(prompt_tokens, sum(completion_tokens)))))
    return events + [DONE]
