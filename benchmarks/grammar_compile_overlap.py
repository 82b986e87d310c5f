"""Does a grammar compile in the structured-output worker thread stall the engine's steps? (lesson 17)

    PYTHONPATH=$PWD python benchmarks/grammar_compile_overlap.py [--tokenizer DIR] [--schemas 20]

The engine runs decode steps of the bundled model (CPU, a batch of unconstrained requests) on the
main thread, as the server's loop does, while a thread compiles fresh random JSON schemas
(aios/bench/json_schemas.py) one after another with aios's GrammarCompiler against --tokenizer (the
bundled 4k one by default; a 151,643-token BPE from `benchmarks/structured_output_backends.py
--train-large-tokenizer DIR` for a Qwen-sized vocabulary). If a compile held the GIL, a step would
wait for it: the longest step during the compiles would be at least one compile long; more
directly, a main thread that only reads the clock would see a gap as long as the compile (its
longest gap is printed; the steps' times also show the two shared cores' contention). Printed:
what validate pays (`GrammarCompiler.check`, parse only), a compile alone, the tokenizer tables
(built once, in the worker), and the steps alone, during the table build, and during the compiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def step(llm, batch: int) -> float:
    """One engine step with `batch` unconstrained requests decoding (finished ones replaced)."""
    from aios import SamplingParams
    while len(llm.seqs) < batch:
        llm.add_request(f"The lord said unto Moses {len(llm.seqs)}", SamplingParams(max_tokens=200, ignore_eos=True))
    t0 = time.perf_counter()
    llm.step()
    return time.perf_counter() - t0


def _while_running(work, tick) -> float:
    """Call tick() on this thread until `work`, run in another thread, returns; work's seconds."""
    done, took = threading.Event(), []

    def run():
        t0 = time.perf_counter()
        work()
        took.append(time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    while not done.is_set():
        tick()
    thread.join()
    return took[0]


def steps_while(llm, batch: int, work) -> tuple[list[float], float]:
    """Step the engine until `work` (run in a thread) returns; (step times, work's seconds)."""
    times: list[float] = []
    took = _while_running(work, lambda: times.append(step(llm, batch)))
    return times, took


def longest_gap(work) -> tuple[float, float]:
    """The main thread spins on the clock while `work` runs in a thread: the longest it went
    without the GIL (a compile that held it would show up whole here), and work's seconds."""
    clock = {"last": time.perf_counter(), "gap": 0.0}

    def tick():
        now = time.perf_counter()
        clock["gap"], clock["last"] = max(clock["gap"], now - clock["last"]), now

    took = _while_running(work, tick)
    return clock["gap"], took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", help="tokenizer dir for the compiles (default: the bundled model's)")
    p.add_argument("--schemas", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()

    from transformers import AutoTokenizer

    from aios import LLM
    from aios.assets import default_model_path
    from aios.bench.json_schemas import random_schema
    from aios.sampling_params import StructuredOutputsParams as S
    from aios.structured_output import GrammarCompiler

    tok = AutoTokenizer.from_pretrained(args.tokenizer or default_model_path())
    vocab = len(tok)
    compiler = GrammarCompiler(tok, vocab, [tok.eos_token_id or 0])
    specs = [S(json=random_schema(5000 + s)) for s in range(3 * args.schemas)]
    compiler.check(specs[0])                                   # imports xgrammar
    checks = []
    for spec in specs:
        t0 = time.perf_counter()
        compiler.check(spec)
        checks.append(time.perf_counter() - t0)

    probe = GrammarCompiler(tok, vocab, [tok.eos_token_id or 0])
    tables_gap, probe_tables_s = longest_gap(probe._xgrammar_compiler)
    fresh = [S(json=random_schema(9000 + s)) for s in range(args.schemas)]
    compiles_gap, probe_compiles_s = longest_gap(lambda: [probe.compile(s) for s in fresh])

    llm = LLM(device="cpu", kvcache_block_size=16, max_model_len=256)
    for _ in range(20):
        step(llm, args.batch)                                 # prefill done, decoding
    alone = [step(llm, args.batch) for _ in range(50)]
    during_tables, tables_s = steps_while(llm, args.batch, compiler._xgrammar_compiler)
    solo = []
    for spec in specs[: args.schemas]:
        t0 = time.perf_counter()
        compiler.compile(spec)
        solo.append(time.perf_counter() - t0)
    background = specs[args.schemas: 2 * args.schemas]
    during, compiles_s = steps_while(llm, args.batch, lambda: [compiler.compile(s) for s in background])
    llm.close()

    result = {
        "device": "CPU", "tokenizer": args.tokenizer or "bundled", "vocab_size": vocab,
        "check_p50_ms": statistics.median(checks) * 1e3, "check_max_ms": max(checks) * 1e3,
        "compile_p50_ms": statistics.median(solo) * 1e3, "compile_max_ms": max(solo) * 1e3,
        "tables_s": tables_s, "gil_gap_during_tables_ms": tables_gap * 1e3, "probe_tables_s": probe_tables_s,
        "gil_gap_during_compiles_ms": compiles_gap * 1e3, "probe_compiles_s": probe_compiles_s,
        "compiles_in_thread_s": compiles_s, "compiles_alone_s": sum(solo),
        "step_alone_p50_ms": statistics.median(alone) * 1e3, "step_alone_max_ms": max(alone) * 1e3,
        "steps_during_tables": len(during_tables), "step_during_tables_max_ms": max(during_tables) * 1e3,
        "steps_during_compiles": len(during), "step_during_compiles_p50_ms": statistics.median(during) * 1e3,
        "step_during_compiles_max_ms": max(during) * 1e3,
    }
    print(f"CPU, {vocab:,}-token tokenizer, {args.schemas} fresh random schemas, decode batch {args.batch}")
    print(f"validate's check (parse only): p50 {ms(statistics.median(checks))}, max {ms(max(checks))}")
    print(f"a compile alone:               p50 {ms(statistics.median(solo))}, max {ms(max(solo))}")
    print(f"main thread's longest GIL gap: {ms(tables_gap)} while the tables are built ({probe_tables_s:.2f} s), "
          f"{ms(compiles_gap)} while {args.schemas} schemas compile ({probe_compiles_s:.2f} s)")
    print(f"tokenizer tables (once):       {tables_s:.2f} s, {len(during_tables)} steps ran meanwhile, "
          f"longest {ms(max(during_tables))}")
    print(f"step alone:                    p50 {ms(statistics.median(alone))}, max {ms(max(alone))}")
    print(f"step during the compiles:      p50 {ms(statistics.median(during))}, max {ms(max(during))} "
          f"({len(during)} steps in {compiles_s:.2f} s of compiles; {sum(solo):.2f} s alone)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
