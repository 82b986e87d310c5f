"""Chat requests with tools: the `tools` and `tool_choice` fields, what each choice does, and the
JSON schema that makes `required` and a named function certain (vLLM's way).

    tool_choice    tools in the prompt   output constrained to                 parsed by (tool_calls.py)
    "none"         no                    nothing                               nothing: plain content
    "auto"         yes                   nothing                               HermesToolParser (<tool_call>)
    "required"     yes                   [{"name", "parameters"}, ...] (>= 1)  JSONArrayToolParser
    {"function"}   yes                   that function's parameters schema    NamedToolParser

`tool_choice` defaults to "auto" when tools are given, "none" when not. A `strict` function under
"auto" is a 400: nothing would hold the model to its schema. The tools reach the model
through its chat template (`apply_chat_template(..., tools=...)`, aios/server/prompts.py): a template
that does not render them is a 400, not a model silently never told of its tools.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from aios.server.tool_calls import HermesToolParser, JSONArrayToolParser, NamedToolParser, ToolParser

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")       # OpenAI's rule for function names
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str
    description: str | None = None
    parameters: dict | None = None            # a JSON schema of the arguments object
    strict: bool | None = None                # true: refused under tool_choice "auto" (which forces nothing)


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str
    arguments: str                            # JSON text, as OpenAI sends it


class MessageToolCall(BaseModel):
    """An earlier assistant turn's call, sent back in `messages`."""

    model_config = ConfigDict(strict=True, extra="forbid")
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


def check_tools(tools: list[Tool] | None, tool_choice: ToolChoice | None) -> str:
    """The tool mode ("none", "auto", "required" or "named"); a ValueError naming the field if
    tools and tool_choice do not fit together."""
    names = [t.function.name for t in tools or []]
    for name in names:
        if not FUNCTION_NAME.match(name):
            raise ValueError(f"tools: function name {name!r:.80} must be 1-64 of a-z, A-Z, 0-9, _ and -")
    if len(set(names)) != len(names):
        raise ValueError(f"tools: function names must be unique, got {names}")
    if tool_choice is None:
        if names:
            _refuse_strict_under_auto(tools)
        return "auto" if names else "none"
    if isinstance(tool_choice, NamedToolChoice):
        if tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names the function {tool_choice.function.name!r:.80}, which is not "
                             f"in tools ({names})")
        return "named"
    if tool_choice != "none" and not names:
        raise ValueError(f"tool_choice={tool_choice!r} needs tools")
    if tool_choice == "auto":
        _refuse_strict_under_auto(tools)
    return tool_choice


def _refuse_strict_under_auto(tools: list[Tool]) -> None:
    """A strict function promises arguments that match its schema: only a forcing tool_choice keeps
    that promise (auto leaves the model free), so strict under auto is refused, not ignored."""
    strict = [t.function.name for t in tools if t.function.strict]
    if strict:
        raise ValueError(f"tools: strict functions {strict} are enforced only under tool_choice \"required\" or "
                         "a named function; under \"auto\" AIOS does not constrain the output")


def parameters_schema(tool: Tool) -> dict:
    return tool.function.parameters if tool.function.parameters else EMPTY_PARAMETERS


def required_schema(tools: list[Tool], parallel_tool_calls: bool) -> dict:
    """tool_choice="required": a JSON array of one call or more, each one tool's name and arguments."""
    schema = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": [
        {"properties": {"name": {"type": "string", "enum": [t.function.name]}, "parameters": parameters_schema(t)},
         "required": ["name", "parameters"]} for t in tools]}}
    if not parallel_tool_calls:
        schema["maxItems"] = 1
    return schema


def forced_schema(tools: list[Tool], tool_choice: ToolChoice | None, parallel_tool_calls: bool) -> dict | None:
    """The JSON schema the output must follow for this tool choice, or None (none / auto)."""
    mode = check_tools(tools, tool_choice)
    if mode == "required":
        return required_schema(tools, parallel_tool_calls)
    if mode == "named":
        return parameters_schema(next(t for t in tools if t.function.name == tool_choice.function.name))
    return None


def tool_parser(tools: list[Tool] | None, tool_choice: ToolChoice | None,
                parallel_tool_calls: bool) -> ToolParser | None:
    """A fresh parser for one choice's output, or None when tools are off."""
    mode = check_tools(tools, tool_choice)
    max_calls = None if parallel_tool_calls else 1
    if mode == "auto":
        return HermesToolParser(max_calls)
    if mode == "required":
        return JSONArrayToolParser(max_calls)
    if mode == "named":
        return NamedToolParser(tool_choice.function.name)
    return None
