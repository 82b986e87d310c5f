"""Chat messages as requests carry them, and as chat templates read them.

A message is system / user / assistant text, an assistant's earlier `tool_calls` (content may then be
null), or a tool's result (`role: "tool"`, `tool_call_id`). Content parts must be text. An earlier
call's arguments reach the template as an object (vLLM does the same: Qwen's template dumps them).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, model_validator

from aios.server.errors import APIError, check_unicode
from aios.server.tools import MessageToolCall


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One turn: system / user / assistant text, an assistant's earlier tool_calls, a tool's result."""

    model_config = ConfigDict(strict=True, extra="allow")
    role: str
    # required (a template would render a missing one as undefined); null only beside tool_calls
    content: str | list[ContentPart] | None
    tool_calls: list[MessageToolCall] | None = None    # an assistant's earlier calls
    tool_call_id: str | None = None                    # a "tool" message: the call it answers
    name: str | None = None

    @model_validator(mode="after")
    def _check(self):
        check_unicode(self.role, "role")
        if self.content is None and not self.tool_calls:
            raise ValueError("content: null is allowed only in an assistant message with tool_calls")
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls belong in assistant messages, not {self.role!r:.20}")
        content = self.content or ""
        texts = [content] if isinstance(content, str) else [p.text or "" for p in content]
        for call in self.tool_calls or []:
            texts += [call.function.name, call.function.arguments]
        for text in texts + [self.tool_call_id or "", self.name or ""]:
            check_unicode(text, "content")
        for name, value in (self.model_extra or {}).items():
            if value not in (None, [], ""):
                raise ValueError(f"{name} is not supported in a message")
        return self

    def as_template_message(self) -> dict:
        """The dict a chat template reads; content parts must all be text. An earlier call's
        arguments go to the template as an object (vLLM does the same: Qwen's template dumps them)."""
        content = self.content
        if isinstance(content, list):
            kinds = {p.type for p in content} - {"text"}
            if kinds:
                raise APIError(400, f"content parts of type {sorted(kinds)} are not supported (text only)",
                               param="messages")
            content = "".join(p.text or "" for p in content)
        message: dict = {"role": self.role, "content": content or ""}
        if self.tool_calls:
            calls = []
            for call in self.tool_calls:
                try:
                    arguments = json.loads(call.function.arguments)
                except ValueError as e:
                    raise APIError(400, f"tool_calls[].function.arguments must be JSON text: {e}",
                                   param="messages") from None
                calls.append({"id": call.id, "type": "function",
                              "function": {"name": call.function.name, "arguments": arguments}})
            message["tool_calls"] = calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            message["name"] = self.name
        return message
