"""What a request brings in, checked where it enters: prompts as text or token ids, chat messages.

Each check raises a ValueError or TypeError that says what was given and what is wanted, so a bad
request is refused before it reaches the scheduler and fails nobody beside it.
"""

from __future__ import annotations

import numpy as np


def token_id_list(prompt: object) -> list[int] | None:
    """prompt as a list of Python ints if it is a flat sequence of integers (list, tuple, 1-D
    integer numpy array or torch tensor), else None."""
    if hasattr(prompt, "tolist") and getattr(prompt, "ndim", None) == 1:      # numpy / torch
        if "int" not in str(getattr(prompt, "dtype", "")):
            return None
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)):
        return None
    if set(map(type, prompt)) <= {int}:            # the common case, checked at C speed
        return list(prompt)
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)) for t in prompt):
        return None
    return [int(t) for t in prompt]


def describe_type(x: object) -> str:
    """'a list of int, str', 'a bytes': what an error message says was given."""
    if isinstance(x, (list, tuple)):
        kinds = sorted({type(t).__name__ for t in x})
        return f"a {type(x).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a {type(x).__name__}"


def check_unicode(text: str, what: str) -> None:
    """Raise a ValueError if text holds a lone surrogate (not valid Unicode: no tokenizer takes it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode: a lone surrogate {text[e.start]!r} at index {e.start}") \
            from None


def check_conversation(conversation: object) -> None:
    """Raise a ValueError naming the message at fault unless every message is a dict with a str
    role and str content (a chat template reading a missing field fails far less clearly)."""
    if not isinstance(conversation, list) or not conversation:
        raise ValueError(f"a conversation must be a non-empty list of messages, got {describe_type(conversation)}")
    for i, m in enumerate(conversation):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {describe_type(m)}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise ValueError(f"messages[{i}] needs a str {key!r}, got {m.get(key)!r}")
            check_unicode(m[key], f"messages[{i}].{key}")
