"""Lessons using each other's files (load_module) and the engine under two ladder rungs (compare_rungs)."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from lessons.common.report import Timer, table
from lessons.common.token_ids import prompts


def load_module(relpath: str) -> ModuleType:
    """Import a file of another lesson, e.g. load_module("03_own_the_model/no_cache_loop.py")
    (the module lessons.03_own_the_model.no_cache_loop)."""
    return importlib.import_module("lessons." + relpath.removesuffix(".py").replace("/", "."))


def compare_rungs(args: argparse.Namespace, lessons: tuple[str, str], label) -> None:
    """Run the same greedy prompts under two ladder rungs and print time, tok/s and whether the
    tokens agree. `label(llm, lesson)` names a row (the switch that differs)."""
    from aios import LLM, SamplingParams
    from aios.bench.ladder import OVERRIDES

    n_prompts, max_tokens = (2, 8) if args.quick else (16, 64)
    texts = prompts(args, n_prompts)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    results = []
    for lesson in lessons:
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init, **OVERRIDES[lesson])
        llm.generate(texts[:1], SamplingParams(max_tokens=2), use_tqdm=False)        # warm-up
        with Timer(args.device) as t:
            outs = llm.generate(texts, params, use_tqdm=False)
        results.append((label(llm, lesson), [o["token_ids"] for o in outs], t.seconds))
        llm.close()
    total = n_prompts * max_tokens
    print(table(["engine", "seconds", "tok/s", "same tokens"], [
        [name, s, total / s, "-" if i == 0 else ("yes" if toks == results[0][1] else "NO")]
        for i, (name, toks, s) in enumerate(results)]))
