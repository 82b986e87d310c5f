"""Per-request sampling settings, validated on construction (lesson 12).

`temperature == 0` means greedy. `seed` makes a request's samples reproducible whatever batch it
lands in: its random numbers are a function of (seed, output position, token id) only.

Every value is checked here, where it enters, so nothing a request carries can fail inside a step
(where it would fail every request batched beside it). What the edges mean:
- temperature: any finite float >= 0 that float32 holds; below 1e-5 it is greedy (1 / T would
  overflow float32); large values flatten the distribution towards uniform over the tokens that
  top-k / top-p / min-p leave.
- top_k: -1 or 0 is off; any k >= the vocabulary size is off too (the engine knows the size).
- top_p: in (0, 1]; the most likely token is always kept, so a top_p below every token's
  probability is greedy, not "nothing".
- Booleans are not numbers here: temperature=True is refused, as is ignore_eos="yes".
A ValueError's message starts with the field's name (the server turns it into a 400 with `param`).

The application fields (issue 20) carry vLLM's names and meanings, so a vLLM user's code runs:
- logprobs: N -> each sampled token's logprob plus the top-N of its position (N = 0: the sampled
  token's only); prompt_logprobs: the same over the prompt (its first token has none).
- presence_penalty / frequency_penalty (OpenAI: subtracted once / per occurrence in the output,
  in [-2, 2]), repetition_penalty (CTRL, HF's: > 0, 1 is off; over prompt and output tokens),
  logit_bias ({token id: bias in [-100, 100]}, added to the logits), min_tokens (EOS and stop
  tokens masked until that many tokens are out), bad_words (strings whose tokens are never
  generated in sequence).
- n samples per prompt of best_of (default n) drawn; the n with the highest cumulative logprob
  are returned. include_stop_str_in_output keeps a matched stop string in the text.
- structured_outputs: a StructuredOutputsParams (exactly one of json / regex / choice / grammar /
  json_object): every sampled token keeps the output a prefix of a string the constraint accepts.
Which of these the engine applies is LLMEngine.validate's to say: it refuses any it does not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

FLOAT32_MAX = 3.4028234663852886e38
GREEDY_BELOW = 1e-5          # temperatures under this are greedy: 1 / T overflows float32 near 1e-38


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _as_float(name: str, x: object) -> float:
    """x as a finite float32-representable Python float, or a ValueError naming the field."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        raise ValueError(f"{name} must be a number, got {x!r}")
    try:
        value = float(x)
    except OverflowError:                    # an int past float's range, e.g. 10**400
        raise ValueError(f"{name} must be finite, got an int of {len(str(x))} digits") from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name} must be a finite number (float32), got {x!r}")
    return value


@dataclass
class StructuredOutputsParams:
    """One output constraint (vLLM's name and fields): exactly one of them is set.

    json: a JSON schema (dict or its JSON text); json_object: any JSON object; regex: a regular
    expression the whole output matches; choice: the output is one of these strings; grammar: an
    EBNF (GBNF) or Lark grammar."""

    json: dict | str | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:
        set_ = [k for k in ("json", "regex", "choice", "grammar", "json_object")
                if getattr(self, k) not in (None, False)]
        if len(set_) != 1:
            raise ValueError(f"structured_outputs needs exactly one of json, regex, choice, grammar, "
                             f"json_object; got {set_ or 'none'}")
        if self.json is not None and not isinstance(self.json, (dict, str)):
            raise ValueError(f"structured_outputs.json must be a JSON schema (dict or str), got {self.json!r:.80}")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"structured_outputs.{name} must be a non-empty string, got {value!r:.80}")
        if self.choice is not None:
            if (isinstance(self.choice, (str, bytes)) or not isinstance(self.choice, Sequence) or not self.choice
                    or not all(isinstance(c, str) and c for c in self.choice)):
                raise ValueError(f"structured_outputs.choice must be a non-empty list of non-empty strings, "
                                 f"got {self.choice!r:.80}")
            self.choice = list(self.choice)
        if self.json_object is not None and not isinstance(self.json_object, bool):
            raise ValueError(f"structured_outputs.json_object must be true or false, got {self.json_object!r}")


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1                    # -1 (or 0, or >= vocab size): no top-k
    min_p: float = 0.0
    max_tokens: int = 64
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    n: int = 1                         # samples returned per prompt
    best_of: int | None = None         # samples drawn per prompt (>= n; None: n); the n best are returned
    logprobs: int | None = None        # top-N logprobs per sampled token (0: the sampled token's only)
    prompt_logprobs: int | None = None  # the same over the prompt's tokens
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    min_tokens: int = 0
    bad_words: list[str] | None = None
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputsParams | None = None
    stop_strings: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ValueError as e:
            raise ValueError(f"SamplingParams: {e}") from None

    def _validate(self) -> None:
        self.temperature = _as_float("temperature", self.temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.temperature < GREEDY_BELOW:
            self.temperature = 0.0
        self.top_p = _as_float("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < -1:
            raise ValueError(f"top_k must be -1 (disabled) or a positive int, got {self.top_k!r}")
        self.min_p = _as_float("min_p", self.min_p)
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not _is_int(self.n) or self.n < 1:
            raise ValueError(f"n must be an int >= 1, got {self.n!r}")
        if self.best_of is not None and (not _is_int(self.best_of) or self.best_of < self.n):
            raise ValueError(f"best_of must be an int >= n ({self.n}), got {self.best_of!r}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = _as_float(name, getattr(self, name))
            if not -2.0 <= value <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {value!r}")
            setattr(self, name, value)
        self.repetition_penalty = _as_float("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 is off), got {self.repetition_penalty!r}")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise ValueError(f"logit_bias must be a dict of token id -> bias, got {self.logit_bias!r:.80}")
            bias = {}
            for k, v in self.logit_bias.items():
                if not _is_int(k) or k < 0:
                    raise ValueError(f"logit_bias keys must be token ids (ints >= 0), got {k!r:.40}")
                v = _as_float("logit_bias", v)
                if not -100.0 <= v <= 100.0:
                    raise ValueError(f"logit_bias values must be in [-100, 100], got {v!r} for token {k}")
                bias[k] = v
            self.logit_bias = bias
        if not _is_int(self.min_tokens) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be an int in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}")
        if self.bad_words is not None:
            if (isinstance(self.bad_words, (str, bytes)) or not isinstance(self.bad_words, Sequence)
                    or not all(isinstance(w, str) and w for w in self.bad_words)):
                raise ValueError(f"bad_words must be a list of non-empty strings, got {self.bad_words!r:.80}")
            self.bad_words = list(self.bad_words)
        if not isinstance(self.include_stop_str_in_output, bool):
            raise ValueError(f"include_stop_str_in_output must be true or false, "
                             f"got {self.include_stop_str_in_output!r}")
        if self.structured_outputs is not None and not isinstance(self.structured_outputs, StructuredOutputsParams):
            raise ValueError(f"structured_outputs must be a StructuredOutputsParams, "
                             f"got {type(self.structured_outputs).__name__}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        stop = self.stop
        if isinstance(stop, str):
            stop = [stop]
        elif stop is None:
            stop = []
        elif not isinstance(stop, Sequence) or isinstance(stop, (bytes, bytearray)):
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}")
        if not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop must be a non-empty string or a list of them, got {self.stop!r}")
        self.stop_strings = list(stop)
        ids = self.stop_token_ids
        if ids is None:
            ids = []
        elif not isinstance(ids, Sequence) or isinstance(ids, (str, bytes, bytearray)):
            raise ValueError(f"stop_token_ids must be a list of token ids, got {ids!r}")
        if not all(_is_int(t) and t >= 0 for t in ids):
            raise ValueError(f"stop_token_ids must be non-negative ints, got {self.stop_token_ids!r}")
        self.stop_token_ids = list(ids)

    def for_choice(self, index: int) -> SamplingParams:
        """The settings of sample `index` of n: the samples are independent, so a seeded request
        gives sample j the seed seed + j (sample 0 keeps the request's own)."""
        if self.seed is None or index == 0:
            return self
        return dataclasses.replace(self, seed=self.seed + index)
