"""The OpenAI wire format on the way in: request bodies, their SamplingParams, and error bodies.

- Request models are pydantic in strict mode: a JSON value of the wrong type (a string where a
  number belongs) is a 400, never silently coerced.
- A field a request model does not implement (logprobs, penalties, tools, vLLM's guided decoding,
  ...) is a 400 naming it in `param`, unless its value asks for nothing (`NOT_ASKED`:
  repetition_penalty=1, skip_special_tokens=true, ...); a field named nowhere is a 400 too. So no
  client believes it got what it asked for.
- Strings are valid Unicode (JSON can carry a lone surrogate), numbers finite (Python's json reads
  NaN), chat messages have content: else a 400 naming the field, not a tokenizer's or a template's
  error.
- vLLM's extensions are accepted as extra body fields: top_k, min_p, ignore_eos, stop_token_ids,
  return_token_ids (each choice also carries its output token ids).
- A server without a tokenizer (skip_tokenizer_init) takes token-id prompts only: text in (a string
  prompt, chat messages, stop strings) is a 400 before it reaches the engine.
- Every error leaves as `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

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


# Fields a request model does not implement, and the values of each that mean "not asked for"
# (what AIOS does anyway: skip_special_tokens=true, min_tokens=0, ...). Any other value, and any
# field named nowhere, is a 400 naming it: no client may believe it got what it asked for.
_NOT_ASKED_COMMON: dict[str, tuple] = {
    "top_logprobs": (None, 0), "echo": (None, False),
    "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "repetition_penalty": (None, 1),
    "logit_bias": (None, {}), "response_format": (None, {"type": "text"}),
    "min_tokens": (None, 0), "include_stop_str_in_output": (None, False), "skip_special_tokens": (None, True),
    "spaces_between_special_tokens": (None, True), "prompt_logprobs": (None, 0),
    "truncate_prompt_tokens": (None,), "use_beam_search": (None, False), "length_penalty": (None, 1),
    "guided_json": (None,), "guided_regex": (None,), "guided_choice": (None,), "guided_grammar": (None,),
    "structured_outputs": (None,), "priority": (None, 0), "store": (None, False),
    "service_tier": (None, "auto", "default"),
}
_NOT_ASKED_COMPLETIONS = {**_NOT_ASKED_COMMON, "suffix": (None, ""), "logprobs": (None,),
                          "max_completion_tokens": (None,)}          # a chat field; max_tokens here
_NOT_ASKED_CHAT = {**_NOT_ASKED_COMMON, "logprobs": (None, False), "tools": (None, []),
                   "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
                   "parallel_tool_calls": (None, True, False), "add_generation_prompt": (None, True),
                   "continue_final_message": (None, False), "chat_template": (None,),
                   "chat_template_kwargs": (None, {}), "modalities": (None, ["text"]), "audio": (None,),
                   "prediction": (None,), "reasoning_effort": (None,), "web_search_options": (None,)}
# Fields that ask the server for nothing: accepted with any value.
_NO_OP = {"user", "metadata", "request_id"}


def means_not_asked(value: Any, not_asked: tuple) -> bool:
    """value is one of not_asked, and a bool only where that bool is listed (in Python True == 1)."""
    for v in not_asked:
        if v is None or value is None or isinstance(v, bool) or isinstance(value, bool):
            if value is v:
                return True
        elif isinstance(v, (int, float)):
            if isinstance(value, (int, float)) and value == v:
                return True
        elif value == v:
            return True
    return False


def check_unicode(text: str, where: str) -> None:
    """A ValueError if text holds a lone surrogate: JSON can carry one ("\\ud800"), no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where} is not valid Unicode: a lone surrogate {text[e.start]!r} at character "
                         f"{e.start}") from None


def param_of(message: str, fields: Any, default: str | None) -> str | None:
    """A ValueError's message starts with the field it is about (SamplingParams, LLMEngine.validate)."""
    first = message.split(maxsplit=1)[0] if message.strip() else ""
    return first if first in fields else default


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool = False

    @model_validator(mode="after")
    def _refuse_unimplemented(self):
        for name, value in (self.model_extra or {}).items():
            if not (name == "continuous_usage_stats" and value in (None, False)):
                raise ValueError(f"stream_options.{name}={value!r:.80} is not supported by AIOS")
        return self


class _SamplingRequest(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    # allow_inf_nan: Python's json reads NaN and Infinity, pydantic would pass them on
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    NOT_ASKED: ClassVar[dict[str, tuple]] = _NOT_ASKED_COMMON

    model: str | None = None                  # None: the served model
    n: int = 1
    best_of: int | None = None                # samples drawn (>= n; None: n); the n with the highest
                                              # cumulative logprob are returned. Not streamed.
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

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, stop: Any) -> Any:
        if not (stop is None or isinstance(stop, str) or (isinstance(stop, list)
                                                          and all(isinstance(s, str) for s in stop))):
            raise ValueError(f"stop must be a string or a list of strings, got {stop!r:.80}")
        for s in [stop] if isinstance(stop, str) else stop or []:
            check_unicode(s, "stop")
        return stop

    def refuse_unimplemented(self) -> None:
        """A 400 naming the first field this server does not implement that asks for something."""
        for name, value in (self.model_extra or {}).items():
            if name in _NO_OP:
                continue
            if name not in self.NOT_ASKED:
                raise APIError(400, f"{name} is not a field AIOS knows for this endpoint", param=name,
                               code="unsupported_parameter")
            if not means_not_asked(value, self.NOT_ASKED[name]):
                raise APIError(400, f"{name}={value!r:.80} is not supported by AIOS (accepted only as "
                                    f"{' or '.join(map(json.dumps, self.NOT_ASKED[name]))}: not asked for)",
                               param=name, code="unsupported_parameter")

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
        if self.stream and self.best_of is not None and self.best_of > self.n:
            raise APIError(400, f"best_of={self.best_of} > n={self.n} cannot be streamed: the n best samples are "
                                "known only once all have finished", param="best_of")
        try:
            return SamplingParams(
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=-1 if self.top_k is None or self.top_k == 0 else self.top_k,
                min_p=0.0 if self.min_p is None else self.min_p,
                max_tokens=1 if max_tokens is None else max_tokens,
                stop=self.stop, stop_token_ids=self.stop_token_ids, ignore_eos=self.ignore_eos,
                seed=self.seed, n=self.n, best_of=self.best_of)
        except ValueError as e:
            message = str(e).removeprefix("SamplingParams: ")
            raise APIError(400, message, param=param_of(message, type(self).model_fields, None)) from e


Prompt = str | list[int]


class CompletionRequest(_SamplingRequest):
    NOT_ASKED: ClassVar[dict[str, tuple]] = _NOT_ASKED_COMPLETIONS

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
        if isinstance(prompt, str):
            check_unicode(prompt, "prompt")
        elif isinstance(prompt[0], str):
            for i, p in enumerate(prompt):
                check_unicode(p, f"prompt[{i}]")
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
    content: str | list[ContentPart]          # required: a template would render a missing one as undefined

    @model_validator(mode="after")
    def _check(self):
        check_unicode(self.role, "role")
        texts = [self.content] if isinstance(self.content, str) else [p.text or "" for p in self.content]
        for text in texts:
            check_unicode(text, "content")
        for name, value in (self.model_extra or {}).items():
            if value not in (None, [], ""):
                raise ValueError(f"{name} is not supported in a message (AIOS serves text chat, no tools)")
        return self

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
    NOT_ASKED: ClassVar[dict[str, tuple]] = _NOT_ASKED_CHAT

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


# every field a request may name: a ValueError of the engine starting with one is about it
REQUEST_FIELDS = frozenset(CompletionRequest.model_fields) | frozenset(ChatCompletionRequest.model_fields)
