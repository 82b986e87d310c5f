"""The request fields that constrain the output, to one StructuredOutputsParams (aios/sampling_params.py).

    response_format {"type": "json_object"}                       -> json_object=True
    response_format {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
                                                                   -> json=schema
    structured_outputs {"json" | "regex" | "choice" | "grammar" | "json_object": ...}   (vLLM)
    guided_json / guided_regex / guided_choice / guided_grammar                         (vLLM, older)
    tool_choice "required" or a named function (chat)             -> json=that schema (aios/server/tools.py)

A request carries at most one of them (two would ask for two grammars at once): a second is a 400
naming it. `strict` is accepted either way: AIOS always enforces a schema it is given.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aios.sampling_params import StructuredOutputsParams


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)
    name: str
    description: str | None = None
    schema_: dict = Field(alias="schema")      # "schema" would shadow BaseModel's own attribute
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('response_format needs "json_schema" exactly when its type is "json_schema"')
        return self

    def constraint(self) -> StructuredOutputsParams | None:
        if self.type == "json_object":
            return StructuredOutputsParams(json_object=True)
        if self.type == "json_schema":
            return StructuredOutputsParams(json=self.json_schema.schema_)
        return None


class StructuredOutputsRequest(BaseModel):
    """vLLM's `structured_outputs` body field: one of these (its other keys are not supported)."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)
    json_: dict | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def constraint(self) -> StructuredOutputsParams:
        return StructuredOutputsParams(json=self.json_, regex=self.regex, choice=self.choice, grammar=self.grammar,
                                       json_object=self.json_object)


class GuidedFields(BaseModel):
    """The constraint fields both endpoints share (mixed into the request models)."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsRequest | None = None
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    def constraints(self) -> list[tuple[str, StructuredOutputsParams]]:
        """(field, constraint) for each constraint field this request sets; ValueErrors name the field."""
        found = []
        for name, make in (
                ("response_format", lambda: self.response_format.constraint()),
                ("structured_outputs", lambda: self.structured_outputs.constraint()),
                ("guided_json", lambda: StructuredOutputsParams(json=self.guided_json)),
                ("guided_regex", lambda: StructuredOutputsParams(regex=self.guided_regex)),
                ("guided_choice", lambda: StructuredOutputsParams(choice=self.guided_choice)),
                ("guided_grammar", lambda: StructuredOutputsParams(grammar=self.guided_grammar))):
            if getattr(self, name) is None:
                continue
            try:
                constraint = make()
            except ValueError as e:                   # StructuredOutputsParams names its own field
                message = str(e)
                if name != "structured_outputs" and message.startswith("structured_outputs"):
                    message = f"{name} {message.split(' ', 1)[1]}"
                raise ValueError(message) from None
            if constraint is not None:
                found.append((name, constraint))
        return found

    def constraint_field(self) -> str | None:
        """The field that sets this request's constraint (response_format, guided_json, ...)."""
        found = self.constraints()
        return found[0][0] if found else None


def one_constraint(found: list[tuple[str, StructuredOutputsParams]]) -> StructuredOutputsParams | None:
    """The request's constraint, or a ValueError naming the second field that sets one."""
    if len(found) > 1:
        raise ValueError(f"{found[1][0]}: a request may constrain its output once; it also sets {found[0][0]}")
    return found[0][1] if found else None
