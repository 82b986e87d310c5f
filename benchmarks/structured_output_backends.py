"""Which grammar library: xgrammar, llguidance or outlines-core, measured on this machine's CPU.

    pip install llguidance outlines-core      # the two the engine does not need
    PYTHONPATH=$PWD python benchmarks/structured_output_backends.py --train-large-tokenizer /tmp/bpe150k \
        [--tokenizer DIR ...] [--schemas 20] [--json FILE]

For each library and tokenizer: the one-time tokenizer preparation, the compile time of random JSON
schemas (aios/bench/json_schemas.py), of any-JSON, a regex and a choice, and the per-token time of
filling the next-token bitmask on a random walk: from the start state, take a uniformly random
allowed token until the grammar ends. The walk is adversarial (any token the mask allows may come),
so its output also checks correctness: every finished walk's text must parse and validate against
its schema (jsonschema), or match its regex / choice. Also what each supports (regex, choice, EBNF,
Lark). The tokenizers: the bundled model's (4,096 tokens) and, with --train-large-tokenizer DIR, a
Qwen-sized one (151,643 tokens, byte-level BPE) trained offline on this Python installation's own
source and docs (~250 MB; about 1-2 minutes; reused when DIR holds one). Prints one table; --json
writes it.

Numbers are for one CPU thread of whatever machine runs it: say which when you quote them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import jsonschema
import numpy as np

from aios.bench.json_schemas import random_schema

REGEX = r"(lord|god) [0-9]{1,3}, [a-z]{2,8}\."
CHOICE = ["Moses", "Aaron", "Miriam", "Joshua"]
MAX_STEPS = 400


def allowed_tokens(bitmask_row: np.ndarray, vocab_size: int) -> np.ndarray:
    """Token ids whose bit is set in an int32 bitmask row (bit j of word w: token 32 w + j)."""
    return np.flatnonzero(np.unpackbits(bitmask_row.view(np.uint8), bitorder="little")[:vocab_size])


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int, eos: int) -> None:
        import xgrammar as xgr
        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[eos])
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.vocab_size = vocab_size

    def compile(self, kind: str, spec):
        c = self.compiler
        if kind == "json":
            return c.compile_json_schema(json.dumps(spec), any_whitespace=False)
        if kind == "any_json":
            return c.compile_builtin_json_grammar()
        if kind == "regex":
            return c.compile_regex(spec)
        return c.compile_regex("(" + "|".join(re.escape(s) for s in spec) + ")")

    def walk(self, compiled, rng: np.random.Generator) -> tuple[list[int], list[float], bool]:
        m = self.xgr.GrammarMatcher(compiled)
        bitmask = self.xgr.allocate_token_bitmask(1, self.vocab_size).numpy()
        import torch
        tmask = torch.from_numpy(bitmask)
        tokens, times = [], []
        while not m.is_terminated() and len(tokens) < MAX_STEPS:
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(tmask, 0)
            times.append(time.perf_counter() - t0)
            tok = int(rng.choice(allowed_tokens(bitmask[0], self.vocab_size)))
            assert m.accept_token(tok)
            tokens.append(tok)
        return tokens, times, m.is_terminated()


class Aios(XGrammar):
    """The engine's own path: xgrammar through aios.structured_output (compact JSON + its guard)."""

    name = "aios (xgrammar + guard)"

    def __init__(self, tokenizer, vocab_size: int, eos: int) -> None:
        from aios.structured_output import GrammarCompiler
        self.compiler = GrammarCompiler(tokenizer, vocab_size, [eos], max_threads=1)
        self.compiler._xgrammar_compiler()      # the tokenizer tables: the one-time preparation
        self.vocab_size = vocab_size

    def compile(self, kind: str, spec):
        from aios.sampling_params import StructuredOutputsParams as S
        if kind == "json":
            params = S(json=spec)
        elif kind == "any_json":
            params = S(json_object=True)
        elif kind == "regex":
            params = S(regex=spec)
        else:
            params = S(choice=spec)
        return self.compiler.compile(params)

    def walk(self, grammar, rng):
        import torch

        from aios.structured_output import StructuredOutputGrammar
        g = StructuredOutputGrammar(grammar)
        bitmask = torch.zeros(1, (self.vocab_size + 31) // 32, dtype=torch.int32)
        tokens, times = [], []
        while not g.is_terminated and len(tokens) < MAX_STEPS:
            t0 = time.perf_counter()
            g.fill(bitmask, 0)
            times.append(time.perf_counter() - t0)
            tok = int(rng.choice(allowed_tokens(bitmask[0].numpy(), self.vocab_size)))
            g.accept(tok)
            tokens.append(tok)
        return tokens, times, g.is_terminated


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab_size: int, eos: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.numpy
        self.ll, self.llnp = llguidance, llguidance.numpy
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)
        self.vocab_size = vocab_size

    def compile(self, kind: str, spec):
        M = self.ll.LLMatcher
        if kind == "json":
            g = M.grammar_from_json_schema(json.dumps(spec), defaults={"whitespace_flexible": False})
        elif kind == "any_json":
            g = M.grammar_from_json_schema('{"type": "object"}', defaults={"whitespace_flexible": False})
        elif kind == "regex":
            g = M.grammar_from_regex(spec)
        else:
            g = M.grammar_from_regex("(" + "|".join(re.escape(s) for s in spec) + ")")
        m = M(self.tok, g)            # llguidance compiles lazily: the first mask pays the rest
        assert not m.is_error(), m.get_error()
        return g

    def walk(self, grammar, rng):
        m = self.ll.LLMatcher(self.tok, grammar)
        bitmask = self.llnp.allocate_token_bitmask(1, self.vocab_size)
        tokens, times = [], []
        while not m.is_stopped() and len(tokens) < MAX_STEPS:
            t0 = time.perf_counter()
            self.llnp.fill_next_token_bitmask(m, bitmask, 0)
            times.append(time.perf_counter() - t0)
            tok = int(rng.choice(allowed_tokens(bitmask[0], self.vocab_size)))
            assert m.consume_token(tok), m.get_error()
            tokens.append(tok)
        return tokens, times, m.is_stopped()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE spells tokens in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab_size: int, eos: int) -> None:
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema
        self.oc, self.build_regex = outlines_core, build_regex_from_schema
        # byte-level BPE tokens ("Ġgod") -> the bytes they stand for
        byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        vocab: dict[bytes, list[int]] = {}
        for tok, i in tokenizer.get_vocab().items():
            if i == eos or i >= vocab_size or tok in tokenizer.all_special_tokens:
                continue
            try:
                vocab.setdefault(bytes(byte_of[c] for c in tok), []).append(i)
            except KeyError:
                continue
        self.vocab = outlines_core.Vocabulary(eos, vocab)
        self.vocab_size, self.eos = vocab_size, eos

    def compile(self, kind: str, spec):
        if kind == "json":
            regex = self.build_regex(json.dumps(spec))
        elif kind == "any_json":
            raise NotImplementedError("outlines-core has no any-JSON grammar (only JSON schema -> regex)")
        elif kind == "regex":
            regex = spec
        else:
            regex = "(" + "|".join(re.escape(s) for s in spec) + ")"
        return self.oc.Index(regex, self.vocab)

    def walk(self, index, rng):
        g = self.oc.Guide(index)
        words = (self.vocab_size + 31) // 32
        bitmask = np.zeros(words, dtype=np.int32)
        tokens, times = [], []
        while not g.is_finished() and len(tokens) < MAX_STEPS:
            t0 = time.perf_counter()
            g.write_mask_into(bitmask.ctypes.data, words, 4)
            times.append(time.perf_counter() - t0)
            tok = int(rng.choice(allowed_tokens(bitmask, self.vocab_size)))
            g.advance(tok)
            tokens.append(tok)
            if tok == self.eos:
                break
        return tokens, times, g.is_finished() or (tokens and tokens[-1] == self.eos)


def check(kind: str, spec, text: str) -> bool:
    try:
        if kind in ("json", "any_json"):
            value = json.loads(text)
            if kind == "json":
                jsonschema.validate(value, spec)
            return True
        if kind == "regex":
            return re.fullmatch(spec, text) is not None
        return text in spec
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False


def measure(lib_cls, tokenizer, vocab_size: int, eos: int, num_schemas: int, seed: int) -> dict:
    t0 = time.perf_counter()
    lib = lib_cls(tokenizer, vocab_size, eos)
    prep_s = time.perf_counter() - t0
    cases = [("json", random_schema(seed + i)) for i in range(num_schemas)]
    cases += [("any_json", None), ("regex", REGEX), ("choice", CHOICE)]
    rng = np.random.default_rng(seed)
    out: dict = {"library": lib.name, "tokenizer_prep_s": prep_s, "compile_ms": {}, "mask_us": [],
                 "valid": 0, "finished": 0, "cases": 0, "unsupported": [], "failures": []}
    json_compile = []
    for kind, spec in cases:
        try:
            t0 = time.perf_counter()
            compiled = lib.compile(kind, spec)
            ms = (time.perf_counter() - t0) * 1e3
        except NotImplementedError as e:
            out["unsupported"].append(str(e))
            continue
        if kind == "json":
            json_compile.append(ms)
        else:
            out["compile_ms"][kind] = ms
        tokens, times, finished = lib.walk(compiled, rng)
        text = tokenizer.decode([t for t in tokens if t != eos])
        out["cases"] += 1
        out["finished"] += bool(finished)
        ok = finished and check(kind, spec, text)
        out["valid"] += ok
        if not ok and len(out["failures"]) < 3:
            out["failures"].append(f"{kind}: {text[:120]!r}")
        out["mask_us"] += [t * 1e6 for t in times]
    out["compile_ms"]["json_schema_p50"] = statistics.median(json_compile)
    out["compile_ms"]["json_schema_max"] = max(json_compile)
    m = out.pop("mask_us")
    out["mask_us"] = {"p50": statistics.median(m), "p99": float(np.percentile(m, 99)), "mean": statistics.fmean(m),
                      "tokens": len(m)}
    return out


SUPPORT = {  # what each library compiles (from its API; the walk above checks the ones measured)
    "aios": "xgrammar's, JSON compact (one space after : and ,), raw control bytes masked out of JSON",
    "xgrammar": "JSON schema, any-JSON, regex, EBNF (GBNF), Lark, structural tags (tool calls)",
    "llguidance": "JSON schema, regex, Lark (its own dialect, GBNF converted), no separate any-JSON",
    "outlines-core": "JSON schema (converted to a regex), regex; no EBNF/Lark, no integer ranges",
}


def train_large_tokenizer(path: str, vocab_size: int = 151_643, corpus_bytes: int = 250_000_000) -> str:
    """A byte-level BPE of Qwen's vocabulary size, trained on local text (nothing downloaded)."""
    import os
    import sys
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def corpus():
        left = corpus_bytes
        for root in (os.path.dirname(os.__file__), "/usr/share"):
            for d, _, files in os.walk(root):
                for name in sorted(files):
                    if name.endswith((".py", ".md", ".txt", ".rst", ".html")) and left > 0:
                        try:
                            with open(os.path.join(d, name), errors="ignore") as f:
                                text = f.read()
                        except OSError:
                            continue
                        left -= len(text)
                        yield text
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    print(f"trained a {tok.get_vocab_size():,}-token BPE into {path}", file=sys.stderr)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(path)
    return path


def main() -> None:
    from transformers import AutoTokenizer

    from aios.assets import default_model_path
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", action="append", help="tokenizer dirs (default: the bundled model's)")
    p.add_argument("--train-large-tokenizer", metavar="DIR", help="also a 151,643-token BPE trained into DIR")
    p.add_argument("--schemas", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--libraries", default="xgrammar,aios,llguidance,outlines-core")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    libs = {c.name.split()[0]: c for c in (XGrammar, Aios, LLGuidance, OutlinesCore)}
    results = []
    paths = args.tokenizer or [default_model_path()]
    if args.train_large_tokenizer:
        paths.append(train_large_tokenizer(args.train_large_tokenizer))
    for path in paths:
        tok = AutoTokenizer.from_pretrained(path)
        vocab_size, eos = len(tok), tok.eos_token_id
        for name in args.libraries.split(","):
            r = measure(libs[name], tok, vocab_size, eos, args.schemas, args.seed)
            r["tokenizer"], r["vocab_size"], r["supports"] = path, vocab_size, SUPPORT[name]
            name = r["library"]
            results.append(r)
            c, m = r["compile_ms"], r["mask_us"]
            print(f"{name:24s} vocab {vocab_size:>7,}  prep {r['tokenizer_prep_s']:6.2f} s  "
                  f"schema compile p50 {c['json_schema_p50']:8.1f} ms max {c['json_schema_max']:8.1f} ms  "
                  f"mask p50 {m['p50']:7.1f} us p99 {m['p99']:8.1f} us  valid {r['valid']}/{r['cases']} "
                  f"(finished {r['finished']})", flush=True)
            for f in r["failures"]:
                print(f"    failed: {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": "CPU (one thread)", "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
