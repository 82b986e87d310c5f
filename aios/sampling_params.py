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
    n: int = 1                         # samples per prompt (LLM.generate and the server make n sequences)
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
