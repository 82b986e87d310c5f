"""Where the time to first token goes on the standard workload, async scheduling on and off, at two
KV block sizes (lesson 11's open question: one H100 run had a median TTFT of 1,804 ms with async
scheduling at 16-token blocks, against 358 ms without).

    PYTHONPATH=$PWD python benchmarks/async_ttft.py --shape qwen3-0.6b            # GPU, four engines
    PYTHONPATH=$PWD python benchmarks/async_ttft.py --model DIR --device cpu --num-seqs 16    # smoke run

All 256 requests arrive at once, so a request's TTFT is the time until the steps have worked through
the prompts queued before it: it is set by how many prompt tokens each step takes in (the token
budget, less what the decodes use) and how long such a step runs. For each (block size, async)
pair this records every step (wall time since the start, prompt tokens scheduled, decodes
scheduled, sequences still waiting), so the table can say which of the two moved: the prompt tokens
a step took, or the time a mixed step took. One JSON in --out, and a PNG of requests-with-a-first-
token against time (one line per configuration).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import tempfile
import time

import numpy as np


def run(model_dir: str, block_size: int, async_scheduling: bool, args: argparse.Namespace) -> dict:
    from aios import LLM, SamplingParams
    from aios.bench import workloads
    from aios.bench.aios_runner import sampling_params

    wl = workloads.by_name("standard", num_seqs=args.num_seqs, vocab=args.vocab)
    llm = LLM(model_dir, device=args.device, kvcache_block_size=block_size, async_scheduling=async_scheduling,
              load_format="dummy", skip_tokenizer_init=True)
    llm.generate(wl.prompts[:32], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    llm.block_manager.reset_prefix_cache()             # the warm-up's prompts must not hit the cache
    steps: list[tuple[float, int, int, int]] = []
    schedule, t0 = llm.scheduler.schedule, [0.0]

    def recorded():
        batch = schedule()
        chunks = [n for s, n in zip(batch.seqs, batch.num_new_tokens) if s.num_computed_tokens < s.num_prompt_tokens]
        steps.append((time.perf_counter() - t0[0], sum(chunks), len(batch) - len(chunks), len(llm.scheduler.waiting)))
        return batch

    llm.scheduler.schedule = recorded
    t0[0] = time.perf_counter()
    outs = llm.generate(wl.prompts, sampling_params(wl), use_tqdm=False)
    elapsed = time.perf_counter() - t0[0]
    llm.scheduler.schedule = schedule
    out_tokens = sum(len(o["token_ids"]) for o in outs)
    ttft = np.array([o["metrics"]["ttft_s"] for o in outs]) * 1000
    mixed = [i for i, s in enumerate(steps) if s[1] > 0]
    last_prefill = mixed[-1] if mixed else 0
    times = np.array([s[0] for s in steps] + [elapsed])
    step_ms = np.diff(times) * 1000
    res = {
        "block_size": block_size, "async_scheduling": async_scheduling,
        "max_num_batched_tokens": llm.config.max_num_batched_tokens, "max_num_seqs": llm.config.max_num_seqs,
        "num_kvcache_blocks": llm.config.num_kvcache_blocks, "num_preemptions": llm.stats()["num_preemptions"],
        "output_tok_per_s": round(out_tokens / elapsed, 1),
        "ttft_ms": {p: round(float(np.percentile(ttft, q)), 1) for p, q in (("p50", 50), ("p90", 90), ("max", 100))},
        "ttft_sorted_ms": [round(float(x), 1) for x in np.sort(ttft)],
        "steps": len(steps), "mixed_steps": len(mixed),
        "prefill_done_ms": round(1000 * times[last_prefill + 1], 1),
        "prompt_tokens_per_mixed_step": round(float(np.mean([steps[i][1] for i in mixed])), 1) if mixed else 0,
        "mixed_step_ms": round(float(np.mean(step_ms[mixed])), 2) if mixed else 0,
        "decode_step_ms": round(float(np.median([step_ms[i] for i in range(len(steps))
                                                 if steps[i][1] == 0] or [0])), 2),
        "first_steps": [[round(1000 * t, 1), p, d, w] for t, p, d, w in steps[:40]],
    }
    llm.close()
    return res


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ttft = r["ttft_sorted_ms"]
        ax.step(ttft, np.arange(1, len(ttft) + 1), where="post",
                label=f"block {r['block_size']}, async {'on' if r['async_scheduling'] else 'off'}")
    ax.set_xlabel("time since all requests arrived (ms)")
    ax.set_ylabel("requests with a first token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen3-0.6b", help="random weights of a published config (aios/bench/shapes.py)")
    ap.add_argument("--model", help="a checkpoint dir instead of --shape (its weights are replaced by random ones)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--num-seqs", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=10000, help="prompt ids are drawn below this")
    ap.add_argument("--block-sizes", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = ap.parse_args()

    from aios.bench.provenance import device_info
    from aios.bench.shapes import write_shape

    model_dir = args.model or write_shape(args.shape, tempfile.mkdtemp())
    results = []
    for bs in args.block_sizes:
        for async_scheduling in (False, True):
            r = run(model_dir, bs, async_scheduling, args)
            results.append(r)
            print(f"block {bs:4d} async {'on ' if async_scheduling else 'off'}: ttft p50 {r['ttft_ms']['p50']:8.1f} ms "
                  f"p90 {r['ttft_ms']['p90']:8.1f} | {r['output_tok_per_s']:9.1f} tok/s | prefill done at "
                  f"{r['prefill_done_ms']:8.1f} ms in {r['mixed_steps']} mixed steps of "
                  f"{r['prompt_tokens_per_mixed_step']:.0f} prompt tokens, {r['mixed_step_ms']:.1f} ms each | "
                  f"decode step {r['decode_step_ms']:.2f} ms | preemptions {r['num_preemptions']}", flush=True)
    info = device_info(args.device)
    os.makedirs(args.out, exist_ok=True)
    name = os.path.basename(os.path.normpath(args.model)) if args.model else args.shape
    gpu = re.sub(r'[^a-z0-9.]+', '-', info['gpu'].lower()).strip('-')
    stem = os.path.join(args.out, f"{datetime.date.today()}-{gpu}-{name}-async-ttft")
    with open(stem + ".json", "w") as f:
        json.dump({**info, "shape": None if args.model else args.shape, "model": args.model, "workload": "standard",
                   "results": results}, f, indent=1)
    plot(results, stem + ".png")
    print("wrote", stem + ".json", stem + ".png")


if __name__ == "__main__":
    main()
