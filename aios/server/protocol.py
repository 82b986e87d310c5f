"""The OpenAI wire format on the way in: request bodies, their SamplingParams, and error bodies.

- Request models are pydantic in strict mode: a JSON value of the wrong type (a string where a
  number belongs) is a 400, never silently coerced.
- Fields OpenAI defines but AIOS does not implement (logprobs, penalties, tools, ...) are accepted
  at their defaults and refused otherwise, so no client believes it got what it asked for.
- vLLM's extensions are accepted as extra body fields: top_k, min_p, ignore_eos, stop_token_ids,
  return_token_ids (each choice also carries its output token ids).
- A server without a tokenizer (skip_tokenizer_init) takes token-id prompts only: text in (a string
  prompt, chat messages, stop strings) is a 400 before it reaches the engine.
- Every error leaves as `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aios.sampling_params import SamplingParams

NO_TOKENIZER = "this server has no tokenizer (skip_tokenizer_init)"


class APIError(Exception):
    """An error that becomes one OpenAI error body and HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def __reduce__(self):                     # picklable: it crosses from the engine's process
        return APIError, (self.status, self.message, self.type, self.param, self.code, self.headers)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# OpenAI fields AIOS does not implement, with the values that mean "not asked for".
_UNSUPPORTED: dict[str, tuple] = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "suffix": (None, ""),
    "best_of": (None, 1), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}), "tools": (None, []), "tool_choice": (None, "none"),
    "response_format": (None, {"type": "text"}),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = None                  # None: the served model
    n: int = 1
    temperature: float | None = None          # None: OpenAI's default, 1.0
    top_p: float | None = None
    top_k: int | None = None                  # vLLM extension
    min_p: float | None = None                # vLLM extension
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None   # vLLM extension
    ignore_eos: bool = False                  # vLLM extension
    return_token_ids: bool = False            # vLLM extension: choices carry "token_ids"
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None                   # accepted, unused

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        for name, value in (self.model_extra or {}).items():
            if name in _UNSUPPORTED and value not in _UNSUPPORTED[name]:
                raise ValueError(f"{name}={value!r} is not supported by AIOS")
        return self

    @property
    def include_usage_in_stream(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def requested_max_tokens(self) -> int | None:
        raise NotImplementedError

    def refuse_text_without_tokenizer(self) -> None:
        """Raise a 400 if serving this request needs the tokenizer the server does not have."""
        if self.stop:
            raise APIError(400, f"stop strings need a tokenizer and {NO_TOKENIZER}: use stop_token_ids",
                           param="stop")

    def sampling_params(self) -> SamplingParams:
        """SamplingParams of one choice; max_tokens=1 stands in while the server still has to fill it
        (see `requested_max_tokens() is None`). SamplingParams' own checks become 400s."""
        max_tokens = self.requested_max_tokens()
        try:
            return SamplingParams(
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=-1 if self.top_k is None or self.top_k == 0 else self.top_k,
                min_p=0.0 if self.min_p is None else self.min_p,
                max_tokens=1 if max_tokens is None else max_tokens,
                stop=self.stop, stop_token_ids=self.stop_token_ids, ignore_eos=self.ignore_eos,
                seed=self.seed, n=self.n)
        except ValueError as e:
            message = str(e).removeprefix("SamplingParams: ")
            param = message.split()[0]
            raise APIError(400, message, param=param if param in type(self).model_fields else None) from e


def params_of_choice(params: SamplingParams, index: int) -> SamplingParams:
    """The n choices of one prompt are independent samples: a seeded request gives choice j seed + j."""
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=params.seed + index)


Prompt = str | list[int]


class CompletionRequest(_SamplingRequest):
    prompt: Any = Field(description="a string, a list of strings, a list of token ids, or a list of those")
    max_tokens: int | None = 16               # OpenAI's default for completions

    @field_validator("prompt", mode="after")
    @classmethod
    def _check_prompt(cls, prompt: Any) -> Any:
        def is_ids(p: Any) -> bool:
            return isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p)

        ok = (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and (
            all(isinstance(p, str) for p in prompt) or is_ids(prompt) or all(is_ids(p) for p in prompt))))
        if not ok:
            raise ValueError("prompt must be a string, a list of strings, a list of token ids, "
                             "or a list of token-id lists (non-empty)")
        return prompt

    def prompts(self) -> list[Prompt]:
        """One entry per prompt: the batch forms become lists, a single prompt a list of one."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def refuse_text_without_tokenizer(self) -> None:
        if any(isinstance(p, str) for p in self.prompts()):
            raise APIError(400, f"{NO_TOKENIZER}: send prompts as token ids", param="prompt")
        super().refuse_text_without_tokenizer()


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    def as_template_message(self) -> dict[str, str]:
        """The dict a chat template reads; content parts must all be text."""
        content = self.content
        if isinstance(content, list):
            kinds = {p.type for p in content} - {"text"}
            if kinds:
                raise APIError(400, f"content parts of type {sorted(kinds)} are not supported (text only)",
                               param="messages")
            content = "".join(p.text or "" for p in content)
        return {"role": self.role, "content": content or ""}


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage]
    max_tokens: int | None = None             # None: up to the context length
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins over max_tokens

    @field_validator("messages", mode="after")
    @classmethod
    def _not_empty(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not messages:
            raise ValueError("messages must hold at least one message")
        return messages

    def conversation(self) -> list[dict[str, str]]:
        return [m.as_template_message() for m in self.messages]

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def refuse_text_without_tokenizer(self) -> None:
        raise APIError(400, f"chat completions need a tokenizer (for the chat template) and {NO_TOKENIZER}: "
                            "use /v1/completions with token-id prompts", param="messages")


def validation_error(errors: list[dict]) -> APIError:
    """A 400 from pydantic's (or FastAPI's) list of validation errors: the first one, named."""
    if not errors:
        return APIError(400, "invalid request body")
    err = errors[0]
    loc = [str(part) for part in err.get("loc", ()) if part != "body"]
    if err.get("type") == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", err.get("msg", ""))
        return APIError(400, f"the request body is not valid JSON: {detail}")
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:                               # about the whole body: not an object, or a refused field
        return APIError(400, message if err.get("type") == "value_error"
                        else f"the request body must be a JSON object: {message}")
    param = loc[0]
    where = ".".join(loc)
    if not message.startswith(param):
        message = f"{where}: {message}"
    return APIError(400, message, param=param)
