"""One engine, one start, many workloads: the loop every engine's process runs for `benchmark.py --suite`.

    python -m aios.bench.engine_runner --engine aios|vllm|hf --model DIR --workloads standard batch1 ... \
        --options '{"max_model_len": 16640, ...}' --deadline EPOCH_S

The parent (aios/bench/suite.py) starts one of these per engine, so no two engines share a process
or GPU memory, and a crash loses one engine's rows, not the call. Each engine is an adapter with
the same four methods (`BenchEngine`); the measuring is here, the same for all of them:
- one start, one short warm-up (32 prompts of 16 tokens, 4 tokens each), then the workloads in order;
- before each workload an untimed request of its own kind (its sampling features, 16 prompt tokens,
  2 tokens), so first-use costs (a grammar compile, a kernel variant) stay out of the timing, and an
  engine that refuses the workload is found there: the row is skipped with the engine's reason;
- `cold` workloads start on an empty prefix cache; a workload with `after` runs on the cache that
  workload leaves (primed untimed if it did not just run);
- before each workload the deadline is checked against its estimate (aios/bench/estimate.py, scaled
  by how this engine's earlier workloads went): what will not fit is skipped, and the runner stops
  cleanly, its finished rows already printed.
Each row is one `BENCH_RESULT {json}` line on stdout as soon as it is measured (then the engine's info,
then `{"done": true}`); anything else the engine prints is its log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Protocol

import numpy as np

from aios.bench import estimate, workloads
from aios.bench.workloads import Workload

PREFIX = "BENCH_RESULT "


class BenchEngine(Protocol):
    name: str

    def info(self) -> dict: ...                                   # version, settings it picked

    def generate(self, wl: Workload) -> tuple[list[int], list[float | None], dict]:
        """Run every request of wl at once; return (output tokens of each, TTFT s of each or None, extras)."""

    def reset_prefix_cache(self) -> None: ...

    def close(self) -> None: ...


def make_engine(name: str, model_dir: str, options: dict) -> BenchEngine:
    if name == "aios":
        from aios.bench.aios_runner import AiosEngine
        return AiosEngine(model_dir, options)
    if name == "vllm":
        from aios.bench.peers.vllm_runner import VLLMEngine
        return VLLMEngine(model_dir, options)
    if name == "hf":
        from aios.bench.peers.hf_runner import HFEngine
        return HFEngine(model_dir, options)
    raise ValueError(f"unknown engine {name!r}; one of aios, vllm, hf")


def percentiles_ms(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs) * 1000.0
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)}


def probe(wl: Workload) -> Workload:
    """An untimed request of wl's kind: its first prompt cut to 16 tokens, 2 output tokens."""
    return dataclasses.replace(wl, name=wl.name + "-probe", prompts=[wl.prompts[0][:16]], max_tokens=[2])


def measure(engine: BenchEngine, wl: Workload) -> dict:
    """Time wl on engine (everything at once, as an offline batch) and summarize it as one row."""
    t = time.perf_counter()
    out_tokens, ttfts, extras = engine.generate(wl)
    elapsed = time.perf_counter() - t
    n_out, n_in = sum(out_tokens), wl.num_prompt_tokens
    row = {"engine": engine.name, "workload": wl.name, "num_seqs": len(wl.prompts), "elapsed_s": round(elapsed, 4),
           "prompt_tokens": n_in, "output_tokens": n_out,
           "output_tok_per_s": round(n_out / elapsed, 1), "total_tok_per_s": round((n_out + n_in) / elapsed, 1),
           "requests_per_s": round(len(wl.prompts) / elapsed, 2)}
    known = [x for x in ttfts if x is not None]
    if known:
        row["ttft_ms"] = percentiles_ms(known)
    if wl.prompt_rate:
        # every prompt token counts, cached ones too: on a warm cache this is the rate a user sees
        if all(n == 1 for n in wl.max_tokens):
            row["prompt_tok_per_s"] = round(n_in / elapsed, 1)
        elif known and len(known) == len(ttfts):
            row["prompt_tok_per_s"] = round(n_in / max(known), 1)     # until the last prompt's first token
        else:
            row["prompt_tok_per_s_note"] = "no per-request TTFT from this engine"
    if len(wl.prompts) == 1 and known and n_out > 1:                  # batch-1 decode: time per output token
        decode_s = elapsed - known[0]
        row["decode_tok_per_s"] = round((n_out - 1) / decode_s, 1)
        row["ms_per_token"] = round(1000 * decode_s / (n_out - 1), 3)
    row.update(extras)
    return row


def run_workloads(engine: BenchEngine, names: list[str], options: dict, deadline: float | None,
                  config: dict, emit=None) -> list[dict]:
    """Run each named workload on the started engine; emit (and return) one row per name."""
    emit = emit or (lambda row: print(PREFIX + json.dumps(row), flush=True))
    kw = workloads.options_kwargs(options)
    limit = options.get("limit")
    rows, estimated, measured = [], [], []
    last = None
    warm = workloads.fixed(32, 16, 4, seed=kw.get("seed", 0), vocab=kw.get("vocab", 10000))
    engine.generate(warm)
    for name in names:
        wl = workloads.by_name(name, **kw)
        limited = bool(limit and len(wl.prompts) > limit)
        if limited:
            wl = dataclasses.replace(wl, prompts=wl.prompts[:limit], max_tokens=wl.max_tokens[:limit])
        t0 = time.time()
        prime = workloads.by_name(wl.after, **kw) if wl.after and wl.after != last else None
        est = estimate.workload_s(wl, config) + (estimate.workload_s(prime, config) if prime else 0.0)
        need = est * estimate.calibrate(estimated, measured)
        if deadline is not None and t0 + need > deadline:
            row = {"engine": engine.name, "workload": name,
                   "skipped": f"budget: ~{need:.0f} s estimated, {max(deadline - t0, 0):.0f} s left"}
            rows.append(row)
            emit(row)
            continue
        try:
            engine.generate(probe(wl))
            if prime is not None:
                engine.reset_prefix_cache()
                engine.generate(dataclasses.replace(prime, max_tokens=[1] * len(prime.prompts)))
            elif wl.cold:
                engine.reset_prefix_cache()
            row = measure(engine, wl)
            if prime is not None:
                row["note"] = f"prefix cache primed (untimed) with {wl.after}'s prompts"
            if limited:
                row["note"] = (row.get("note", "") + f"; first {limit} requests of the workload").lstrip("; ")
        except (ValueError, NotImplementedError) as e:             # the engine refuses this workload
            row = {"engine": engine.name, "workload": name, "skipped": f"refused: {type(e).__name__}: {e}"[:500]}
        except Exception as e:                                     # a failure: the next workloads still try
            row = {"engine": engine.name, "workload": name, "error": f"{type(e).__name__}: {e}"[:1000]}
        last = name if "output_tok_per_s" in row else None        # what the prefix cache now holds
        if last:                                                   # only real runs calibrate the estimates
            estimated.append(est)
            measured.append(time.time() - t0)
        rows.append(row)
        emit(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=["aios", "vllm", "hf"])
    ap.add_argument("--model", required=True, help="checkpoint dir (config.json; weights optional: random)")
    ap.add_argument("--workloads", nargs="+", required=True)
    ap.add_argument("--options", default="{}", help="JSON: max_model_len, seed, vocab, engine_kwargs, ...")
    ap.add_argument("--deadline", type=float, default=None, help="time.time() by which to have stopped")
    args = ap.parse_args(argv)
    options = json.loads(args.options)
    with open(f"{args.model}/config.json") as f:
        config = json.load(f)
    t = time.perf_counter()
    engine = make_engine(args.engine, args.model, options)
    info = {"engine": args.engine, "info": True, "init_s": round(time.perf_counter() - t, 2), **engine.info()}
    print(PREFIX + json.dumps(info), flush=True)
    try:
        run_workloads(engine, args.workloads, options, args.deadline, config)
    finally:
        print(PREFIX + json.dumps({"engine": args.engine, "info": True, **engine.info()}), flush=True)
        engine.close()
        print(PREFIX + json.dumps({"engine": args.engine, "done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
