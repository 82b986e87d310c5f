"""A tool call as a stream sends it: in pieces (ToolCallDelta, OpenAI's delta.tool_calls[]), and
how the pieces of a whole response merge into its message.tool_calls.

What stays true (tests/test_tool_calls.py): a call's first piece carries its id and name (and
maybe the start of its arguments), each later piece only more of its arguments; indices count
calls from 0 in the order they start. So the pieces of any stream concatenate, by `merge_tool_call_deltas`, to the
calls of the same text parsed whole (the parsers in tool_calls.py give both).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallDelta:
    """A piece of call `index`: its first piece has id and name; every piece may add arguments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None

    def as_openai(self) -> dict:
        """The delta.tool_calls[] entry of a stream chunk."""
        if self.id is None:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        return {"index": self.index, "id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def merge_tool_call_deltas(deltas: list[ToolCallDelta]) -> list[dict]:
    """A whole response's message.tool_calls from all the pieces."""
    calls: list[dict] = []
    for d in deltas:
        if d.id is not None:
            calls.append({"id": d.id, "type": "function", "function": {"name": d.name, "arguments": ""}})
        calls[d.index]["function"]["arguments"] += d.arguments
    return calls


def coalesce_deltas(calls: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Adjacent argument pieces of one call as one piece."""
    out: list[ToolCallDelta] = []
    for d in calls:
        if out and d.id is None and out[-1].index == d.index:
            out[-1] = ToolCallDelta(d.index, out[-1].arguments + d.arguments, out[-1].id, out[-1].name)
        else:
            out.append(d)
    return out
