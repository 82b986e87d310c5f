"""OpenAI error bodies, and the checks whose failures name the field at fault.

Every error leaves as `{"error": {"message", "type", "param", "code"}}` with its HTTP status; a 400's
`param` is the request field it is about (a ValueError's message starts with that field's name:
SamplingParams, LLMEngine.validate and the request models all write them so).
"""

from __future__ import annotations

import re
from typing import Any


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


def check_unicode(text: str, where: str) -> None:
    """A ValueError if text holds a lone surrogate: JSON can carry one ("\\ud800"), no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where} is not valid Unicode: a lone surrogate {text[e.start]!r} at character "
                         f"{e.start}") from None


def param_of(message: str, fields: Any, default: str | None) -> str | None:
    """A ValueError's message starts with the field it is about (SamplingParams, LLMEngine.validate),
    perhaps followed by a colon, a dot or its value ("structured_outputs.json must ...",
    "tool_choice='required' needs tools")."""
    first = re.match(r"\s*([A-Za-z_]*)", message).group(1)
    return first if first in fields else default


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
