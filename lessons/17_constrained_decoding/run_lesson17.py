#!/usr/bin/env python
"""Lesson 17: constrained decoding. A token mask keeps every sampled token inside a grammar.

    the mask        : which tokens a regex, a choice and a JSON schema allow, at real positions
    straddling      : tokens of the bundled tokenizer that cover more than one grammar symbol
    the outputs     : the same prompts with and without a JSON schema (parses? validates?)
    cost per step   : host time to fill the bitmask (1 / 16 / 64 rows), device time to apply it,
                      and the engine's decode rate with and without constraints, async on and off

Runs on the bundled model (its 4,096-token tokenizer) unless --model names another checkpoint.
"""

from __future__ import annotations

import json
import statistics
import time

from lessons import common

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
WORDS_REGEX = r"(the|lord|god)( (the|lord|god))*"


def allowed(grammar, vocab_size: int) -> list[int]:
    import numpy as np
    import torch
    bitmask = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)
    grammar.fill(bitmask, 0)
    return np.flatnonzero(np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[:vocab_size]).tolist()


def show(tok, ids: list[int], limit: int = 12) -> str:
    texts = [repr(tok.decode([i])) for i in ids[:limit]]
    return ", ".join(texts) + (f", ... ({len(ids)} in all)" if len(ids) > limit else f" ({len(ids)})")


def main() -> None:
    args = common.setup(common.parser(__doc__).parse_args())
    if args.skip_tokenizer_init:
        raise SystemExit("lesson 17 needs a checkpoint with a tokenizer: constraints are over text")
    import jsonschema

    from aios import LLM, SamplingParams
    from aios.bench.json_schemas import random_schema
    from aios.sampling_params import StructuredOutputsParams as S
    from aios.structured_output import StructuredOutputGrammar

    print(common.describe(args))
    llm = LLM(args.model, device=args.device, kvcache_block_size=16, max_model_len=512)
    tok, so = llm.tokenizer, llm.structured_output
    vocab = llm.config.hf_config.vocab_size
    eos = llm.eos_token_ids

    common.heading("the mask: tokens allowed at the start, and after a prefix")
    for spec, prefix in [(S(choice=["Moses", "Moab", "Aaron"]), "Mo"), (S(regex=WORDS_REGEX), "the"),
                         (S(json=SCHEMA), '{"name": "Mo')]:
        g = StructuredOutputGrammar(so.compiler.compile(spec))
        start = allowed(g, vocab)
        for t in tok.encode(prefix, add_special_tokens=False):
            g.accept(t)
        after = allowed(g, vocab)
        what = next(k for k in ("choice", "regex", "json") if getattr(spec, k) is not None)
        print(f"{what}: at the start   {show(tok, start)}")
        eos_allowed = any(e in after for e in eos)
        print(f"{' ' * len(what)}  after {prefix!r:10s} {show(tok, after)}   EOS allowed: {eos_allowed}")

    common.heading("straddling: one token, two grammar symbols")
    g = StructuredOutputGrammar(so.compiler.compile(S(regex=WORDS_REGEX)))
    for t in tok.encode("the", add_special_tokens=False):
        g.accept(t)
    spanning = [i for i in allowed(g, vocab) if tok.decode([i]).startswith(" ") and len(tok.decode([i])) > 1]
    print(f"regex {WORDS_REGEX!r} after 'the': the separator ' ' and the next word come as one token: "
          f"{show(tok, spanning)}")
    for text in ('{"name": "Moses", "age": 120}', "the lord god"):
        ids = tok.encode(text, add_special_tokens=False)
        print(f"{text!r} is {len(ids)} tokens: {[tok.decode([i]) for i in ids]}")
    print("A mask over characters would be wrong for tokens: the grammar must be run over each token's whole "
          "text, from the state the output is in (xgrammar precomputes that per grammar state).")

    common.heading("the outputs: a random schema, with and without the mask (the bundled model, seeded)")
    n = 8 if args.quick else 32
    schemas = [random_schema(s) for s in range(n)]
    prompts = [f"The lord said unto Moses {s}" for s in range(n)]
    runs = {}
    for name, with_mask in (("with the mask", True), ("without", False)):
        params = [SamplingParams(temperature=0.9, seed=i, max_tokens=200,
                                 structured_outputs=S(json=s) if with_mask else None) for i, s in enumerate(schemas)]
        runs[name] = llm.generate(prompts, params, use_tqdm=False)
    rows = []
    for name, outs in runs.items():
        parses = valid = 0
        for o, s in zip(outs, schemas):
            try:
                value = json.loads(o["text"])
                parses += 1
                jsonschema.validate(value, s)
                valid += 1
            except (json.JSONDecodeError, jsonschema.ValidationError):
                pass
        rows.append([name, n, parses, valid, statistics.fmean(len(o["token_ids"]) for o in outs)])
    print(common.table(["", "requests", "parse as JSON", "validate", "tokens per output"], rows))
    print(f"schema 0: {json.dumps(schemas[0])[:150]}...")
    print(f"with the mask: {runs['with the mask'][0]['text'][:150]!r}")
    print(f"without:       {runs['without'][0]['text'][:150]!r}")

    common.heading("cost per step: filling the bitmask on the host (xgrammar, compact JSON, random schemas)")
    import torch
    rows = []
    for batch in (1, 16, 64):
        seqs = []
        for s in range(batch):
            params = SamplingParams(max_tokens=1, structured_outputs=S(json=random_schema(s)))
            so.compile(params).result()        # compiled and cached first: add_request then sets seq.grammar at once
            seqs.append(llm.add_request([5], params))
        for seq in seqs:                                      # walk each a few tokens in, as a decode would be
            for _ in range(3):
                seq.grammar.accept(allowed(seq.grammar, vocab)[-1])
        reps = 20 if args.quick else 200
        t0 = time.perf_counter()
        for _ in range(reps):
            so.fill_bitmask(seqs)
        fill_us = (time.perf_counter() - t0) / reps * 1e6
        for seq in seqs:
            llm.abort_request(seq.seq_id)
        logits = torch.randn(batch, vocab, device=args.device)
        packed, k = so.fill_bitmask(seqs[:batch])
        start = -(-k // 4) * 4
        mask = packed.to(args.device)
        with common.Timer(args.device) as timer:
            for _ in range(reps):
                so.apply_bitmask(logits, mask[start:].view(k, so.num_words), mask[:k])
        rows.append([batch, fill_us, fill_us / batch, timer.seconds / reps * 1e6])
    print(common.table(["rows", "fill us / step", "us / row", f"apply us / step ({args.device}, {vocab} tokens)"],
                       rows))

    common.heading("cost per step: the engine's decode rate, free vs constrained (16 requests, 48 tokens each)")
    rows = []
    for async_scheduling in (True, False):
        for constrained in (False, True):
            with LLM(args.model, device=args.device, kvcache_block_size=16, max_model_len=512,
                     async_scheduling=async_scheduling) as engine:
                params = [SamplingParams(temperature=0.9, seed=i, max_tokens=48, ignore_eos=not constrained,
                                         structured_outputs=S(regex=r"[a-z ]{48,}") if constrained else None)
                          for i in range(16)]
                engine.generate(prompts[:2], params[:2], use_tqdm=False)       # warm
                t0 = time.perf_counter()
                outs = engine.generate(prompts[:16] if n >= 16 else (prompts * 2)[:16], params, use_tqdm=False)
                s = time.perf_counter() - t0
            tokens = sum(len(o["token_ids"]) for o in outs)
            rows.append([f"async {'on' if async_scheduling else 'off'}", "regex [a-z ]{48,}" if constrained else "none",
                         tokens, tokens / s])
    print(common.table(["scheduling", "constraint", "tokens", "tok/s"], rows))
    llm.close()


if __name__ == "__main__":
    main()
