"""Seeded random JSON schemas: the structured-output workload (tests, benchmarks, lesson 17).

Every schema is an object with nested objects, arrays, enums, integer ranges, booleans, strings
and required fields, as applications send them. Each is bounded on purpose: strings carry a
maxLength, arrays a maxItems, numbers are integers in a range, so any output that follows the
schema ends within a few hundred tokens (a small model constrained to an unbounded string or
digit run could wander to max_tokens, and the test could not tell a wandering model from a mask
that lets it wander).

Invariant: random_schema(seed) is a pure function of the seed (same seed, same schema).
"""

from __future__ import annotations

import random

WORDS = ["name", "age", "city", "tribe", "king", "year", "count", "tags", "items", "title", "kind",
         "place", "owner", "price", "score", "level", "flag", "note", "color", "size"]
ENUM_WORDS = ["lord", "god", "israel", "moses", "david", "egypt", "red", "blue", "green", "small", "large"]


def random_schema(seed: int, max_depth: int = 2) -> dict:
    """A JSON schema of an object, drawn from `seed` (see the module docstring for what it holds)."""
    return _object(random.Random(seed), max_depth)


def _object(rng: random.Random, depth: int) -> dict:
    names = rng.sample(WORDS, rng.randint(1, 4))
    properties = {name: _value(rng, depth) for name in names}
    required = [n for n in names if rng.random() < 0.7] or names[:1]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _value(rng: random.Random, depth: int) -> dict:
    kinds = ["string", "integer", "boolean", "enum"] + (["object", "array"] if depth > 0 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "minLength": rng.randint(0, 2), "maxLength": rng.randint(3, 12)}
    if kind == "integer":
        lo = rng.randint(-100, 100)
        return {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 1000)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(ENUM_WORDS, rng.randint(1, 4))}
    if kind == "object":
        return _object(rng, depth - 1)
    item = _value(rng, depth - 1)
    lo = rng.randint(0, 2)
    return {"type": "array", "items": item, "minItems": lo, "maxItems": lo + rng.randint(0, 3)}
