"""The body of POST /v1/chat/completions (ChatCompletionRequest): messages, chat's logprobs
(`logprobs: true` + `top_logprobs`), tools and tool_choice.

What stays true: messages are a non-empty list, each with content (aios/server/messages.py);
max_completion_tokens wins over max_tokens; top_logprobs needs logprobs: true and is at most
MAX_TOP_LOGPROBS; tools and tool_choice that do not fit together are a 400 naming the field
(aios/server/tools.py); a forcing tool_choice is the request's output constraint. A chat request
needs the tokenizer (its template): without one it is a 400.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from aios.sampling_params import StructuredOutputsParams
from aios.server.errors import APIError, param_of
from aios.server.messages import ChatMessage
from aios.server.sampling_request import NO_TOKENIZER, NOT_ASKED_COMMON, SamplingRequest
from aios.server.tools import Tool, ToolChoice, check_tools, forced_schema, tool_parser

NOT_ASKED_CHAT = {**NOT_ASKED_COMMON, "echo": (None, False), "functions": (None, []),
                  "function_call": (None, "none"), "add_generation_prompt": (None, True),
                  "continue_final_message": (None, False), "chat_template": (None,),
                  "chat_template_kwargs": (None, {}), "modalities": (None, ["text"]), "audio": (None,),
                  "prediction": (None,), "reasoning_effort": (None,), "web_search_options": (None,)}
MAX_TOP_LOGPROBS = 20                     # OpenAI's bound on chat top_logprobs


class ChatCompletionRequest(SamplingRequest):
    NOT_ASKED: ClassVar[dict[str, tuple]] = NOT_ASKED_CHAT

    messages: list[ChatMessage]
    max_tokens: int | None = None             # None: up to the context length
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins over max_tokens
    logprobs: bool = False                    # each output token's logprob ...
    top_logprobs: int | None = None           # ... and the top-N of its position (needs logprobs: true)
    tools: list[Tool] | None = None           # aios/server/tools.py
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True

    @field_validator("messages", mode="after")
    @classmethod
    def _not_empty(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not messages:
            raise ValueError("messages must hold at least one message")
        return messages

    def conversation(self) -> list[dict]:
        return [m.as_template_message() for m in self.messages]

    @property
    def tool_mode(self) -> str:
        """"none", "auto", "required" or "named" (aios/server/tools.py); a 400 if tools and
        tool_choice do not fit together."""
        try:
            return check_tools(self.tools, self.tool_choice)
        except ValueError as e:
            raise APIError(400, str(e), param=param_of(str(e), ("tools", "tool_choice"), "tools")) from None

    def template_tools(self) -> list[dict] | None:
        """The chat template's `tools` (OpenAI's form); none for tool_choice "none"."""
        if self.tool_mode == "none":
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]

    def new_tool_parser(self):
        """A fresh tool-call parser for one choice (aios/server/tool_calls.py), None for tool_choice "none"."""
        return tool_parser(self.tools, self.tool_choice, self.parallel_tool_calls)

    def constraints(self) -> list:
        found = super().constraints()
        schema = forced_schema(self.tools, self.tool_choice, self.parallel_tool_calls)
        if schema is not None:
            found.append(("tool_choice", StructuredOutputsParams(json=schema)))
        return found

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requested_logprobs(self) -> tuple[int | None, int | None]:
        if self.top_logprobs is not None:
            if self.top_logprobs and not self.logprobs:
                raise ValueError("top_logprobs needs logprobs: true")
            if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
                raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        return (self.top_logprobs or 0) if self.logprobs else None, self.prompt_logprobs

    def refuse_text_without_tokenizer(self) -> None:
        raise APIError(400, f"chat completions need a tokenizer (for the chat template) and {NO_TOKENIZER}: "
                            "use /v1/completions with token-id prompts", param="messages")
