"""Constraint -> compiled grammar over the model's tokens (xgrammar), cached by the spec (lesson 17).

A StructuredOutputsParams names its constraint in one of five ways; each becomes one xgrammar
grammar, compiled against the tokenizer's vocabulary (for every grammar state, which tokens keep
the output a prefix of an accepted string: xgrammar precomputes this for most states, so a step's
mask is a lookup plus a little work for the rest):

| spec          | grammar                                                                      |
|---------------|------------------------------------------------------------------------------|
| json          | the JSON schema (strict: no properties beyond the schema's; compact: one    |
|               | space after ':' and ',', no other whitespace, so a small model cannot loop   |
|               | on whitespace), plus the control-byte guard below                            |
| json_object   | the schema {"type": "object"} (any JSON object), compact likewise             |
| regex         | the regular expression, matched by the whole output                          |
| choice        | the regex (c1|c2|...) of the escaped choices                                  |
| grammar       | EBNF (GBNF, xgrammar's dialect: `root ::= ...`) if it holds "::=", else Lark |

The control-byte guard: xgrammar 0.2.9 lets a length-bounded JSON string (maxLength / minLength)
hold raw bytes below 0x20 (its character class there is [^"\\\r\n], where unbounded strings have
[^\0-\x1f"\\\r\n]), which no JSON parser accepts; the random walk of
benchmarks/structured_output_backends.py finds it in about one schema in twenty. Compact JSON has
no raw byte below 0x20 anywhere (whitespace is one space; control characters in strings are
escapes), so a JSON constraint's mask is ANDed with `Grammar.guard`, which clears every token that
holds such a byte. It never empties a mask: wherever a JSON grammar allows a control byte it also allows a
printable character (or the closing quote).

Two halves, split by what they need (vLLM's split: the frontend parses, a thread compiles):
- `check` parses the constraint without the tokenizer (xgrammar's Grammar.from_json_schema /
  from_regex / from_ebnf / from_lark; ~0.15 ms for a random schema on the CPU), so a bad spec is a
  ValueError naming the field (structured_outputs.json / .regex / .choice / .grammar), raised by
  LLMEngine.validate at add_request: it never reaches a step. (One exception: a Lark grammar that
  names special tokens needs the tokenizer to parse; its errors come from `compile`.)
- `compile` builds the token tables against the tokenizer (CPU: ~1 ms at 4k tokens; at 150k, ~40
  ms with one xgrammar thread, 4 ms p50 with the engine's 8; xgrammar releases the GIL meanwhile:
  benchmarks/grammar_compile_overlap.py). StructuredOutputManager runs it in its worker
  thread, so no step waits for it.

Invariants:
- `compile` is a pure function of the spec: the cache holds at most `cache_size` compiled
  grammars, least recently used first out, keyed by (kind, canonical text); a JSON schema's
  properties come out in the schema's order. `compile` may run in a worker thread while the
  engine's thread calls `cached` / `check`: the cache has a lock of its own, held only for dict
  operations, and the lazily built xgrammar compiler another, so neither waits for a compile.
- The tokenizer's tables are built on the first compile, so an engine that never constrains a
  request never pays for them (CPU: 0.2 s at 4k tokens, 0.7 s at 150k; measured by
  benchmarks/structured_output_backends.py), and one that does pays in the worker thread.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from aios.sampling_params import StructuredOutputsParams

_XGRAMMAR_PREFIX = re.compile(r"^\[[0-9:]+\] [^ ]+:[0-9]+: (Check failed: \(.*?\) is false: )?")


def _message(e: Exception) -> str:
    """xgrammar's error text without its log prefix ("[12:00:00] /project/cpp/x.cc:94: ")."""
    return _XGRAMMAR_PREFIX.sub("", str(e).strip()).strip()


def spec_key(spec: StructuredOutputsParams) -> tuple[str, str]:
    """(kind, canonical text) of a constraint: equal specs give equal keys. A schema's key order is
    kept (not sorted): it is the order of the properties in the output."""
    if spec.json is not None:
        if isinstance(spec.json, str):
            try:
                value = json.loads(spec.json)
            except json.JSONDecodeError as e:
                raise ValueError(f"structured_outputs.json: not valid JSON: {e}") from None
        else:
            value = spec.json
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"structured_outputs.json: not a JSON schema: {e}") from None
        if not isinstance(value, dict):
            raise ValueError(f"structured_outputs.json: a JSON schema is an object, got {text:.80}")
        return "json", text
    if spec.json_object:
        return "json", '{"type": "object"}'
    if spec.regex is not None:
        return "regex", spec.regex
    if spec.choice is not None:
        return "regex", "(" + "|".join(re.escape(c) for c in spec.choice) + ")"
    kind = "ebnf" if "::=" in spec.grammar else "lark"
    return kind, spec.grammar


@dataclass(frozen=True)
class Grammar:
    """A compiled constraint: xgrammar's CompiledGrammar, and for JSON the control-byte guard."""

    compiled: object                     # xgrammar.CompiledGrammar (shared by every sequence of this spec)
    guard: np.ndarray | None = None      # int32 [ceil(vocab / 32)]: tokens a JSON output may hold


_WHAT = {"json": "invalid or unsupported JSON schema", "regex": "invalid regex", "ebnf": "invalid EBNF grammar",
         "lark": "invalid Lark grammar (EBNF needs 'root ::= ...')"}


def _field(spec: StructuredOutputsParams, kind: str) -> str:
    return {"json": "json", "regex": "choice" if spec.choice is not None else "regex"}.get(kind, "grammar")


class GrammarCompiler:
    """Compiles constraints for one tokenizer; one per engine (StructuredOutputManager owns it)."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: list[int], cache_size: int = 256,
                 max_threads: int = 8) -> None:
        """`vocab_size`: the model's logits width (may exceed the tokenizer's: the extra ids are
        never allowed). `eos_token_ids`: allowed exactly where the grammar may end."""
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self.cache_size, self.max_threads = cache_size, max_threads
        self._init_lock = threading.Lock()         # guards the two fields below (held while they are built)
        self._compiler = None                      # xgrammar's, built on the first compile
        self._json_guard: np.ndarray | None = None
        self._lock = threading.Lock()              # guards the cache (never held while compiling)
        self._cache: OrderedDict[tuple[str, str], Grammar] = OrderedDict()

    def _xgrammar_compiler(self):
        with self._init_lock:
            if self._compiler is None:
                import xgrammar as xgr
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self.eos_token_ids)
                self._json_guard = self._guard(info.decoded_vocab[: self.vocab_size])
                self._compiler = xgr.GrammarCompiler(info, max_threads=self.max_threads, cache_enabled=False)
            return self._compiler

    def _guard(self, decoded_vocab: list[bytes]) -> np.ndarray:
        """The control-byte guard (module docstring): bit t set unless token t holds a byte < 0x20.
        In numpy, not a Python loop: it runs in the worker thread, beside the engine's steps."""
        lengths = np.fromiter(map(len, decoded_vocab), dtype=np.int64, count=len(decoded_vocab))
        control = np.frombuffer(b"".join(decoded_vocab), dtype=np.uint8) < 0x20
        before = np.concatenate([[0], np.cumsum(control)])        # control bytes before each offset
        ends = np.cumsum(lengths)
        allowed = np.ones(-(-self.vocab_size // 32) * 32, dtype=np.uint8)
        allowed[: len(decoded_vocab)][before[ends] - before[ends - lengths] > 0] = 0
        return np.packbits(allowed, bitorder="little").view(np.int32)

    def check(self, spec: StructuredOutputsParams) -> None:
        """Raise a ValueError naming the field unless `spec` parses (no tokenizer: cheap)."""
        key = spec_key(spec)
        with self._lock:
            if key in self._cache:
                return
        import xgrammar as xgr
        kind, text = key
        try:
            if kind == "json":
                xgr.Grammar.from_json_schema(text, any_whitespace=False, strict_mode=True)
            elif kind == "regex":
                xgr.Grammar.from_regex(text)
            elif kind == "ebnf":
                xgr.Grammar.from_ebnf(text)
            elif not hasattr(xgr.Grammar, "from_lark"):
                raise ValueError("Lark grammars need xgrammar >= 0.2.9; write EBNF (root ::= ...) instead")
            else:
                xgr.Grammar.from_lark(text)
        except (RuntimeError, ValueError, TypeError) as e:
            if kind == "lark" and "requires tokenizer_info" in str(e):
                return                      # named special tokens: only `compile` can tell
            raise ValueError(f"structured_outputs.{_field(spec, kind)}: {_WHAT[kind]}: {_message(e)}") from None

    def cached(self, spec: StructuredOutputsParams) -> Grammar | None:
        """The compiled grammar of `spec` if it is in the cache (marked as just used), else None."""
        key = spec_key(spec)
        with self._lock:
            grammar = self._cache.get(key)
            if grammar is not None:
                self._cache.move_to_end(key)
            return grammar

    def compile(self, spec: StructuredOutputsParams) -> Grammar:
        """The compiled grammar of `spec` (from the cache when it was compiled before)."""
        cached = self.cached(spec)
        if cached is not None:
            return cached
        kind, text = key = spec_key(spec)
        c = self._xgrammar_compiler()
        try:
            if kind == "json":
                compiled = c.compile_json_schema(text, any_whitespace=False, strict_mode=True)
            elif kind == "regex":
                compiled = c.compile_regex(text)
            elif kind == "ebnf":
                compiled = c.compile_grammar(text)
            elif hasattr(c, "compile_lark"):
                compiled = c.compile_lark(text)
            else:
                raise ValueError("Lark grammars need xgrammar >= 0.2.9; write EBNF (root ::= ...) instead")
        except (RuntimeError, ValueError, TypeError) as e:
            raise ValueError(f"structured_outputs.{_field(spec, kind)}: {_WHAT[kind]}: {_message(e)}") from None
        grammar = Grammar(compiled, self._json_guard if kind == "json" else None)
        with self._lock:
            self._cache[key] = grammar
            self._cache.move_to_end(key)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return grammar
