"""What /v1/completions and /v1/chat/completions share on the way in: the sampling fields of a
request body (SamplingRequest, the base of both request models) and how they become SamplingParams.

What stays true (tests/test_server_requests.py, test_server_sampling_fields.py):
- Request models are pydantic in strict mode: a JSON value of the wrong type (a string where a
  number belongs) is a 400, never silently coerced.
- A field a request model does not implement (beam search, skip_special_tokens=false, ...) is a
  400 naming it in `param`, unless its value asks for nothing (its endpoint's `NOT_ASKED`:
  use_beam_search=false, skip_special_tokens=true, ...; `means_not_asked`); a field named nowhere
  is a 400 too. So no client believes it got what it asked for.
- Strings are valid Unicode (JSON can carry a lone surrogate), numbers finite (Python's json reads
  NaN): else a 400 naming the field, not a tokenizer's error.
- Every check `sampling_params` makes (SamplingParams' own included) is a 400 naming its field.
- A server without a tokenizer (skip_tokenizer_init) takes token-id prompts only: text in (a string
  prompt, chat messages, stop strings) is a 400 before it reaches the engine
  (`refuse_text_without_tokenizer`, which each endpoint extends).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from aios.sampling_params import SamplingParams
from aios.server.errors import APIError, check_unicode, param_of
from aios.server.structured_outputs import GuidedFields, one_constraint

NO_TOKENIZER = "this server has no tokenizer (skip_tokenizer_init)"


# Fields a request model does not implement, and the values of each that mean "not asked for"
# (what AIOS does anyway: skip_special_tokens=true, min_tokens=0, ...). Any other value, and any
# field named nowhere, is a 400 naming it: no client may believe it got what it asked for.
NOT_ASKED_COMMON: dict[str, tuple] = {
    "skip_special_tokens": (None, True), "spaces_between_special_tokens": (None, True),
    "truncate_prompt_tokens": (None,), "use_beam_search": (None, False), "length_penalty": (None, 1),
    "guided_decoding_backend": (None,), "guided_whitespace_pattern": (None,), "priority": (None, 0),
    "store": (None, False), "service_tier": (None, "auto", "default"),
}
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


class SamplingRequest(GuidedFields):
    """Fields shared by /v1/completions and /v1/chat/completions (and the constraint fields of
    GuidedFields)."""

    # allow_inf_nan: Python's json reads NaN and Infinity, pydantic would pass them on
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    NOT_ASKED: ClassVar[dict[str, tuple]] = NOT_ASKED_COMMON

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
