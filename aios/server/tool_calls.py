"""Tool calls out of generated text: Qwen's (Hermes') `<tool_call>` format, and the JSON that
`tool_choice="required"` or a named function forces (aios/server/tools.py), into OpenAI's `tool_calls`.

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Each parser takes the text in pieces (a stream's deltas) and gives back ToolCallDeltas and content
text as soon as they are certain; a whole response is the same parser fed the whole text at once
(`parse_all`), so a stream's pieces always concatenate to the whole response's calls and content.
The pieces themselves, and how a whole response merges them, are tool_call_deltas.py's.

What stays true (tests/test_tool_calls.py):
- Text that could still be the start of `<tool_call>` is held back, never sent as content.
- A call is sent once its name is known (its id, type and name, arguments ""), then its arguments as
  the model writes them: the raw JSON text of the "arguments" value, nothing after it.
- Content is the text before the first `<tool_call>`; text after it is not content (vLLM's rule).
  If no call's name could be read by the end, all of the text is content: nothing is lost.
- A block whose head is not Qwen's (no JSON, keys reordered, a name that is no JSON string) forms
  no call, and no text the model writes makes a parser raise.
- A call cut short (finish_reason "length") keeps the arguments written so far: OpenAI's
  arguments are the model's text and may be invalid JSON; a client must check.
- `max_calls` (parallel_tool_calls=false: 1): calls past it are dropped.
"""

from __future__ import annotations

import json
import re

from aios.server.tool_call_deltas import ToolCallDelta, coalesce_deltas, merge_tool_call_deltas, new_tool_call_id

__all__ = ["HermesToolParser", "JSONArrayToolParser", "NamedToolParser", "ToolCallDelta", "ToolParser",
           "merge_tool_call_deltas", "parse_all"]

TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
# the head of Qwen's call object, piece by piece, up to where the arguments' value starts
_HEAD_PIECES = [r"\s*", r"\{", r"\s*", *'"name"', r"\s*", ":", r"\s*", '"', r'(?:[^"\\]|\\.)*\\?', '"', r"\s*",
                ",", r"\s*", *'"arguments"', r"\s*", ":"]
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def _prefix_pattern(pieces: list[str]) -> re.Pattern:
    """Matches any text that is a prefix of a match of "".join(pieces) (piece by piece)."""
    pattern = ""
    for piece in reversed(pieces):
        pattern = f"(?:{piece}{pattern})?" if pattern else f"(?:{piece})?"
    return re.compile(pattern + "$")


_HEAD_PREFIX = _prefix_pattern(_HEAD_PIECES)          # a head still being written: wait for more


class _JSONScanner:
    """Where JSON text stands, fed a character at a time: inside a string (escapes honoured) or not,
    and at what depth of objects and arrays."""

    def __init__(self) -> None:
        self.depth, self.in_string, self.escaped = 0, False, False

    def feed(self, c: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = False
        elif c == '"':
            self.in_string = True
        elif c in "{[":
            self.depth += 1
        elif c in "}]":
            self.depth -= 1


class _JSONValueEnd:
    """Finds where one JSON value ends, fed a character at a time (strings and escapes honoured)."""

    def __init__(self) -> None:
        self.started, self.scalar = False, False
        self._scanner = _JSONScanner()

    def feed(self, c: str) -> bool | None:
        """True: c is the value's last character; None: c is past the value (a scalar ended before it)."""
        if not self.started:
            if c.isspace():
                return False
            self.started, self.scalar = True, c not in '"{['
            if not self.scalar:
                self._scanner.feed(c)
            return False
        if self.scalar:
            return None if (c in ",}]" or c.isspace()) else False
        self._scanner.feed(c)
        return not self._scanner.in_string and self._scanner.depth == 0


class HermesToolParser:
    """Qwen's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, streamed."""

    def __init__(self, max_calls: int | None = None) -> None:
        self.max_calls = max_calls
        self._buffer = ""               # text not yet given out
        self._state = "content"         # content -> head -> arguments -> tail -> between -> head ...
        self._held = ""                 # every character since the first <tool_call> (lost if no call forms)
        self._calls = 0
        self._scanner: _JSONValueEnd | None = None

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """(content, call pieces) that `text`, following everything fed before, makes certain."""
        self._buffer += text
        if self._state != "content":
            self._held += text
        content, calls = "", []
        while self._buffer:
            if self._state == "content":
                start = self._buffer.find(TOOL_CALL_START)
                if start < 0:
                    keep = _partial_suffix(self._buffer, TOOL_CALL_START)
                    content += self._buffer[: len(self._buffer) - keep]
                    self._buffer = self._buffer[len(self._buffer) - keep:]
                    break
                content += self._buffer[:start]
                self._held = self._buffer[start:]
                self._buffer = self._buffer[start + len(TOOL_CALL_START):]
                self._state = "head"
            elif self._state == "head":
                match = _HEAD.match(self._buffer)
                if match is None:
                    end = self._buffer.find(TOOL_CALL_END)
                    if end >= 0 or not _HEAD_PREFIX.match(self._buffer):
                        self._state = "tail"              # not Qwen's head (no JSON, keys reordered): skip the block
                        continue
                    break                                 # wait for more
                try:
                    name = json.loads(f'"{match.group(1)}"')
                except ValueError:                        # no JSON string (a raw newline, an unknown escape)
                    self._state = "tail"                  # so no call: skip the block
                    continue
                if self.max_calls is None or self._calls < self.max_calls:
                    calls.append(ToolCallDelta(self._calls, "", new_tool_call_id(), name))
                self._calls += 1
                self._buffer = self._buffer[match.end():]
                self._scanner = _JSONValueEnd()
                self._state = "arguments"
            elif self._state == "arguments":
                if not self._scanner.started:
                    self._buffer = self._buffer.lstrip()
                    if not self._buffer:
                        break
                taken, done = 0, False
                for c in self._buffer:
                    ended = self._scanner.feed(c)
                    if ended is None:
                        done = True
                        break
                    taken += 1
                    if ended:
                        done = True
                        break
                piece, self._buffer = self._buffer[:taken], self._buffer[taken:]
                if piece and self._emitting:
                    calls.append(ToolCallDelta(self._calls - 1, piece))
                if not done:
                    break
                self._state = "tail"
            elif self._state == "tail":                   # after the arguments, to the block's end
                end = self._buffer.find(TOOL_CALL_END)
                if end < 0:
                    self._buffer = self._buffer[len(self._buffer) - _partial_suffix(self._buffer, TOOL_CALL_END):]
                    break
                self._buffer, self._state = self._buffer[end + len(TOOL_CALL_END):], "between"
            else:                                         # between blocks: wait for the next one
                start = self._buffer.find(TOOL_CALL_START)
                if start < 0:
                    self._buffer = self._buffer[len(self._buffer) - _partial_suffix(self._buffer, TOOL_CALL_START):]
                    break
                self._buffer, self._state = self._buffer[start + len(TOOL_CALL_START):], "head"
        return content, coalesce_deltas(calls)

    @property
    def _emitting(self) -> bool:
        return self.max_calls is None or self._calls <= self.max_calls

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """What is left at the end: held-back text that never became a tag is content; so is all
        the text after the first `<tool_call>` when no call's name could be read."""
        content = self._buffer if self._state == "content" else ""
        if self._state != "content" and self._calls == 0:
            content = self._held
        self._buffer = ""
        return content, []

    @property
    def num_calls(self) -> int:
        return min(self._calls, self.max_calls) if self.max_calls is not None else self._calls


class JSONArrayToolParser:
    """tool_choice="required": the output is a JSON array of {"name", "parameters"} (the schema of
    tools.required_schema forces it); each call goes out whole once its object closes."""

    def __init__(self, max_calls: int | None = None) -> None:
        self.max_calls = max_calls
        self._text = ""                 # all of the output
        self._element_start: int | None = None
        self._scanner = _JSONScanner()
        self.num_calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        calls = []
        for c in text:
            self._text += c
            before = self._scanner.depth
            self._scanner.feed(c)
            after = self._scanner.depth
            if after == 2 and after > before:             # an element of the array opens ...
                self._element_start = len(self._text) - 1
            elif after == 1 and after < before and self._element_start is not None:     # ... and closes
                calls += self._call(self._text[self._element_start:])
                self._element_start = None
        return "", calls

    def _call(self, element: str) -> list[ToolCallDelta]:
        try:
            call = json.loads(element)
            name, parameters = call["name"], call["parameters"]
        except (ValueError, KeyError, TypeError):
            return []
        if not isinstance(name, str) or (self.max_calls is not None and self.num_calls >= self.max_calls):
            return []
        self.num_calls += 1
        return [ToolCallDelta(self.num_calls - 1, json.dumps(parameters, ensure_ascii=False), new_tool_call_id(), name)]

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        return ("" if self.num_calls else self._text), []


class NamedToolParser:
    """A named tool_choice: the whole output is that function's arguments (tools.py forces its schema)."""

    def __init__(self, name: str) -> None:
        self.name, self.num_calls = name, 0

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        if self.num_calls == 0:
            self.num_calls = 1
            return "", [ToolCallDelta(0, text, new_tool_call_id(), self.name)]
        return "", [ToolCallDelta(0, text)] if text else []

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        return "", []


ToolParser = HermesToolParser | JSONArrayToolParser | NamedToolParser


def parse_all(parser: ToolParser, text: str) -> tuple[str | None, list[dict]]:
    """A whole response: (message content, or None if empty; message.tool_calls)."""
    content, deltas = parser.feed(text)
    rest, more = parser.finish()
    content += rest
    return (content or None), merge_tool_call_deltas(deltas + more)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest tail of text that is a proper prefix of tag."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
