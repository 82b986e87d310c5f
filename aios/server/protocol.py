"""The OpenAI wire format on the way in: request bodies, their SamplingParams, and error bodies.

- Request models are pydantic in strict mode: a JSON value of the wrong type (a string where a
  number belongs) is a 400, never silently coerced.
- What the server maps onto SamplingParams (aios/sampling_params.py has the meanings): n, best_of,
  temperature, top_p, top_k, min_p, seed, stop, stop_token_ids, ignore_eos, max_tokens, the three
  penalties, logit_bias (OpenAI's string keys become token ids, checked against the vocabulary),
  min_tokens, bad_words, include_stop_str_in_output; logprobs (completions: an int, with `echo`
  also the prompt's; chat: `logprobs: true` + `top_logprobs`), vLLM's prompt_logprobs; one output
  constraint (response_format, structured_outputs, guided_*, or a forcing tool_choice:
  aios/server/structured_outputs.py, tools.py). The engine may still refuse a field it does not
  apply yet (LLMEngine.validate): a 400 naming it.
- A field a request model does not implement (beam search, skip_special_tokens=false, ...) is a
  400 naming it in `param`, unless its value asks for nothing (`NOT_ASKED`: use_beam_search=false,
  skip_special_tokens=true, ...); a field named nowhere is a 400 too. So no client believes it got
  what it asked for.
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

from aios.sampling_params import SamplingParams, StructuredOutputsParams
from aios.server.errors import APIError, check_unicode, param_of, validation_error  # noqa: F401 (re-exported)
from aios.server.messages import ChatMessage
from aios.server.structured_outputs import GuidedFields, one_constraint
from aios.server.tools import Tool, ToolChoice, check_tools, forced_schema, tool_parser

NO_TOKENIZER = "this server has no tokenizer (skip_tokenizer_init)"


# Fields a request model does not implement, and the values of each that mean "not asked for"
# (what AIOS does anyway: skip_special_tokens=true, min_tokens=0, ...). Any other value, and any
# field named nowhere, is a 400 naming it: no client may believe it got what it asked for.
_NOT_ASKED_COMMON: dict[str, tuple] = {
    "skip_special_tokens": (None, True), "spaces_between_special_tokens": (None, True),
    "truncate_prompt_tokens": (None,), "use_beam_search": (None, False), "length_penalty": (None, 1),
    "guided_decoding_backend": (None,), "guided_whitespace_pattern": (None,), "priority": (None, 0),
    "store": (None, False), "service_tier": (None, "auto", "default"),
}
_NOT_ASKED_COMPLETIONS = {**_NOT_ASKED_COMMON, "suffix": (None, ""), "top_logprobs": (None, 0),
                          "max_completion_tokens": (None,)}          # a chat field; max_tokens here
_NOT_ASKED_CHAT = {**_NOT_ASKED_COMMON, "echo": (None, False), "functions": (None, []),
                   "function_call": (None, "none"), "add_generation_prompt": (None, True),
                   "continue_final_message": (None, False), "chat_template": (None,),
                   "chat_template_kwargs": (None, {}), "modalities": (None, ["text"]), "audio": (None,),
                   "prediction": (None,), "reasoning_effort": (None,), "web_search_options": (None,)}
MAX_TOP_LOGPROBS = 20                     # OpenAI's bound on chat top_logprobs
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


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool = False

    @model_validator(mode="after")
    def _refuse_unimplemented(self):
        for name, value in (self.model_extra or {}).items():
            if not (name == "continuous_usage_stats" and value in (None, False)):
                raise ValueError(f"stream_options.{name}={value!r:.80} is not supported by AIOS")
        return self


class _SamplingRequest(GuidedFields):
    """Fields shared by /v1/completions and /v1/chat/completions (and the constraint fields of
    GuidedFields)."""

    # allow_inf_nan: Python's json reads NaN and Infinity, pydantic would pass them on
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    NOT_ASKED: ClassVar[dict[str, tuple]] = _NOT_ASKED_COMMON

    model: str | None = None                  # None: the served model
    n: int = 1
    best_of: int | None = None                # samples drawn (>= n); the n most likely are returned
    temperature: float | None = None          # None: OpenAI's default, 1.0
    top_p: float | None = None
    top_k: int | None = None                  # vLLM extension
    min_p: float | None = None                # vLLM extension
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None   # vLLM extension
    ignore_eos: bool = False                  # vLLM extension
    return_token_ids: bool = False            # vLLM extension: choices carry "token_ids"
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None   # vLLM extension
    logit_bias: dict[str, float] | None = None  # OpenAI: {"token id": bias in [-100, 100]}
    min_tokens: int | None = None             # vLLM extension
    bad_words: list[str] | None = None        # vLLM extension
    include_stop_str_in_output: bool = False  # vLLM extension
    prompt_logprobs: int | None = None        # vLLM extension
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

    def sampling_params(self, vocab_size: int | None = None) -> SamplingParams:
        """SamplingParams of one prompt's choices; max_tokens=1 stands in while the server still has
        to fill it (see `requested_max_tokens() is None`). Every check becomes a 400 naming its field."""
        max_tokens = self.requested_max_tokens()
        try:
            logprobs, prompt_logprobs = self.requested_logprobs()
            if self.stream and self.best_of is not None and self.best_of > self.n:
                raise ValueError(f"best_of={self.best_of} > n={self.n} cannot be streamed: the n best samples are "
                                 "known only once all have finished")
            return SamplingParams(
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=-1 if self.top_k is None or self.top_k == 0 else self.top_k,
                min_p=0.0 if self.min_p is None else self.min_p,
                max_tokens=1 if max_tokens is None else max_tokens,
                stop=self.stop, stop_token_ids=self.stop_token_ids, ignore_eos=self.ignore_eos,
                seed=self.seed, n=self.n, best_of=None if self.best_of == self.n else self.best_of,
                presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
                repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
                logit_bias=self.token_logit_bias(vocab_size), min_tokens=self.min_tokens or 0,
                bad_words=self.bad_words, include_stop_str_in_output=self.include_stop_str_in_output,
                logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                structured_outputs=one_constraint(self.constraints()))
        except ValueError as e:
            message = str(e).removeprefix("SamplingParams: ")
            raise APIError(400, message, param=param_of(message, type(self).model_fields, None)) from e

    def requested_logprobs(self) -> tuple[int | None, int | None]:
        """(SamplingParams.logprobs, SamplingParams.prompt_logprobs)."""
        raise NotImplementedError

    def token_logit_bias(self, vocab_size: int | None) -> dict[int, float] | None:
        """OpenAI's {"token id": bias} as {token id: bias}: keys are decimal token ids in the vocabulary."""
        if not self.logit_bias:
            return None
        bias = {}
        for key, value in self.logit_bias.items():
            if not (key.isascii() and key.isdigit()):
                raise ValueError(f"logit_bias keys must be token ids (decimal strings), got {key!r:.40}")
            token_id = int(key)
            if vocab_size is not None and token_id >= vocab_size:
                raise ValueError(f"logit_bias token id {token_id} is outside the vocabulary [0, {vocab_size})")
            bias[token_id] = value
        return bias

    @property
    def wants_logprobs(self) -> bool:
        return self.requested_logprobs() != (None, None)


Prompt = str | list[int]


class CompletionRequest(_SamplingRequest):
    NOT_ASKED: ClassVar[dict[str, tuple]] = _NOT_ASKED_COMPLETIONS

    prompt: Any = Field(description="a string, a list of strings, a list of token ids, or a list of those")
    max_tokens: int | None = 16               # OpenAI's default for completions
    logprobs: int | None = None               # top-N per token (the sampled one's always)
    echo: bool = False                        # the prompt first: its text, and with logprobs its logprobs

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

    def requested_logprobs(self) -> tuple[int | None, int | None]:
        # vLLM's rule: echo with logprobs N also scores the prompt, with the same N
        prompt_logprobs = self.prompt_logprobs
        if prompt_logprobs is None and self.echo and self.logprobs is not None:
            prompt_logprobs = self.logprobs
        return self.logprobs, prompt_logprobs

    def refuse_text_without_tokenizer(self) -> None:
        if any(isinstance(p, str) for p in self.prompts()):
            raise APIError(400, f"{NO_TOKENIZER}: send prompts as token ids", param="prompt")
        super().refuse_text_without_tokenizer()


class ChatCompletionRequest(_SamplingRequest):
    NOT_ASKED: ClassVar[dict[str, tuple]] = _NOT_ASKED_CHAT

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


# every field a request may name: a ValueError of the engine starting with one is about it
REQUEST_FIELDS = frozenset(CompletionRequest.model_fields) | frozenset(ChatCompletionRequest.model_fields)
