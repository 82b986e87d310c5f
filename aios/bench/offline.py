"""Measure AIOS (and peers, side by side) on the standard workloads; write JSON + plots.

`aios bench` and `python benchmark.py` (from a clone) run this; the flags are the same.

    python benchmark.py                               # Qwen3-0.6B shape, standard workload, on the GPU
    python benchmark.py --shape qwen3-8b --workload standard batch1 batch32
    python benchmark.py --peer hf --peer vllm         # peers in their own processes, same workload
    python benchmark.py --ladder                      # every lesson's settings on one workload
    python benchmark.py --workload prefix             # prefix caching off vs on
    python benchmark.py --model /path/to/Qwen3-0.6B   # a real checkpoint instead of random weights

Workloads: standard = 256 seqs, input/output lengths U[100, 1024], seed 0, ignore_eos,
temperature 0.6 (what nano-vllm reports); short = 512 seqs, input U[20, 400], output U[20, 600];
batch1 / batch32 = in 128, out 512, greedy; prefix = 64 requests behind one 2048-token system prompt.
The engine runs at its own defaults (aios.Config picks max_num_seqs / max_num_batched_tokens from
the device) unless the flags say otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import glob
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

import aios
from aios.bench import workloads
from aios.bench.ladder import rungs
from aios.bench.provenance import git_sha
from aios.bench.shapes import write_shape

RESULTS = os.path.join("benchmarks", "results")      # under the current directory (a clone's root: the repo's)


def percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs) * 1000.0
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)}


def device_info(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    info["gpu"] = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'cpu'}, " \
        f"{os.cpu_count()} threads)"
    info["aios_git"] = git_sha()
    return info


def get_workload(name: str, args: argparse.Namespace) -> workloads.Workload:
    return workloads.by_name(name, num_seqs=args.ladder_num_seqs if name == "ladder" else args.num_seqs,
                             input_len=args.input_len, output_len=args.output_len, seed=args.seed, vocab=args.vocab)


def run_aios(model_dir: str, wl: workloads.Workload, engine_kwargs: dict, limit: int | None = None,
             use_tqdm: bool = False, profile: bool = False) -> dict:
    from aios import LLM, SamplingParams

    prompts, max_tokens = wl.prompts[:limit], wl.max_tokens[:limit]
    t0 = time.perf_counter()
    llm = LLM(model_dir, **engine_kwargs)
    init_s = time.perf_counter() - t0
    # warm-up: compiles the Triton kernels for the shapes this workload hits (out of the timed run)
    llm.generate(prompts[:32], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    if llm.config.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    llm.block_manager.reset_prefix_cache()
    before = llm.stats()
    params = [SamplingParams(temperature=wl.temperature, max_tokens=n, ignore_eos=True) for n in max_tokens]
    t = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=use_tqdm)
    elapsed = time.perf_counter() - t
    stats = llm.stats()
    out_tokens = sum(len(o["token_ids"]) for o in outs)
    in_tokens = sum(map(len, prompts))
    ttft = [o["metrics"]["ttft_s"] for o in outs]
    itl = [x for o in outs for x in o["metrics"]["itl_s"]]
    res = {
        "engine": "aios", "num_seqs": len(prompts), "elapsed_s": round(elapsed, 3), "init_s": round(init_s, 2),
        "output_tokens": out_tokens, "prompt_tokens": in_tokens,
        "output_tok_per_s": round(out_tokens / elapsed, 1),
        "total_tok_per_s": round((out_tokens + in_tokens) / elapsed, 1),
        "ttft_ms": percentiles(ttft), "itl_ms": percentiles(itl),
        "num_kvcache_blocks": llm.config.num_kvcache_blocks,
        "num_preemptions": stats["num_preemptions"] - before["num_preemptions"],
        "prefix_cache_hit_tokens": stats["prefix_cache_hits"] - before["prefix_cache_hits"],
        "prefill_tokens_computed": in_tokens - (stats["prefix_cache_hits"] - before["prefix_cache_hits"]),
        "config": {k: v for k, v in engine_kwargs.items()},
        "max_num_seqs": llm.config.max_num_seqs, "max_num_batched_tokens": llm.config.max_num_batched_tokens,
    }
    if len(prompts) == 1:                                   # batch-1 decode: time per output token
        decode_s = elapsed - ttft[0]
        res["decode_tok_per_s"] = round((out_tokens - 1) / decode_s, 1)
        res["ms_per_token"] = round(1000 * decode_s / (out_tokens - 1), 3)
    if llm.config.device == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if profile:
        from aios.bench.profile_steps import profile_engine
        res["profile"] = profile_engine(llm, prompts, params)
        print(res["profile"].pop("kernel_table"), flush=True)
        print({k: v for k, v in res["profile"].items()}, flush=True)
    llm.close()
    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return res


def run_peer(peer: str, model_dir: str, workload: str, args: argparse.Namespace, limit: int | None) -> dict:
    module = {"hf": "aios.bench.peers.hf_runner", "vllm": "aios.bench.peers.vllm_runner"}[peer]
    cmd = [sys.executable, "-m", module, "--model", model_dir, "--workload", workload,
           "--num-seqs", str(args.ladder_num_seqs if workload == "ladder" else args.num_seqs),
           "--input-len", str(args.input_len),
           "--output-len", str(args.output_len), "--seed", str(args.seed), "--vocab", str(args.vocab)]
    if limit:
        cmd += ["--limit", str(limit)]
    if peer == "hf":
        cmd += ["--batch-size", str(args.hf_batch_size)]
    env = dict(os.environ, NCCL_NVLS_ENABLE="0")
    # run from the directory that holds this aios package: `-m` then imports the same aios as this process
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(aios.__file__))))
    for line in proc.stdout.splitlines():
        if line.startswith("PEER_RESULT "):
            res = json.loads(line[len("PEER_RESULT "):])
            if limit:
                res["note"] = f"first {limit} sequences of the workload"
            return res
    return {"engine": peer, "error": (proc.stderr or proc.stdout)[-2000:]}


def engine_kwargs(args: argparse.Namespace, model_dir: str) -> dict:
    kw = dict(device=args.device, dtype=args.dtype, max_model_len=args.max_model_len,
              max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
              kvcache_block_size=args.block_size, gpu_memory_utilization=args.gpu_memory_utilization,
              enforce_eager=args.enforce_eager, tensor_parallel_size=args.tp,
              async_scheduling=not args.no_async_scheduling)
    if not glob.glob(os.path.join(model_dir, "*.safetensors")):
        kw["load_format"] = "dummy"
    if not os.path.exists(os.path.join(model_dir, "tokenizer.json")):
        kw["skip_tokenizer_init"] = True
    return kw


def save(result: dict, name: str, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    gpu = result["gpu"].split("(")[0].strip().replace(" ", "-").lower()
    date = datetime.date.today().isoformat()
    path = os.path.join(out_dir, f"{date}-{gpu}-{result['shape']}-{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def plot_ladder(result: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    rows = result["ladder"]
    labels = [f"L{r['lesson']}" for r in rows] + [p for p in result.get("peers", {})]
    values = [r["output_tok_per_s"] for r in rows] + [p["output_tok_per_s"] for p in result.get("peers", {}).values()
                                                       if "output_tok_per_s" in p]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(labels[: len(values)], values, color=["tab:blue"] * len(rows) + ["tab:gray"] * (len(values) - len(rows)))
    ax.set_ylabel("output tok/s")
    ax.set_yscale("log")
    ax.set_title(f"AIOS lesson ladder: {result['shape']} on {result['gpu']}")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None, prog: str | None = None, results_dir: str = RESULTS) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a real checkpoint dir (default: random weights of --shape)")
    ap.add_argument("--shape", default="qwen3-0.6b", help="qwen3-0.6b | qwen3-1.7b | qwen3-4b | qwen3-8b | ...")
    ap.add_argument("--workload", nargs="+", default=["standard"],
                    help="standard | short | batch1 | batch32 | batchN | prefix (several allowed)")
    ap.add_argument("--ladder", action="store_true", help="run every lesson's settings (see aios/bench/ladder.py)")
    ap.add_argument("--ladder-num-seqs", type=int, default=64)
    ap.add_argument("--ladder-sequential-seqs", type=int, default=8,
                    help="the one-sequence-at-a-time rung runs only this many (it is slow)")
    ap.add_argument("--peer", action="append", default=[], choices=["hf", "vllm"], help="peers, each in its process")
    ap.add_argument("--hf-limit", type=int, default=64,
                    help="HF runs only the first N sequences of the standard workload (it is slow)")
    ap.add_argument("--hf-batch-size", type=int, default=64, help="HF's static batch size")
    ap.add_argument("--num-seqs", type=int, default=256)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--block-size", type=int, default=None, help="KV block size (default: the engine's)")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-num-seqs", type=int, default=None, help="default: aios.Config's, picked from the device")
    ap.add_argument("--max-num-batched-tokens", type=int, default=None,
                    help="default: aios.Config's, picked from the device (16,384 on GPUs of >= 70 GiB, as vLLM)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--no-async-scheduling", action="store_true", help="wait for each step's tokens")
    ap.add_argument("--profile", action="store_true", help="after each run, a per-step time breakdown + kernel table")
    ap.add_argument("--out", default=results_dir, help="where JSON results and plots go (default: %(default)s)")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    args = ap.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    if args.model:
        model_dir, shape = args.model, os.path.basename(os.path.normpath(args.model)).lower()
    else:
        model_dir, shape = write_shape(args.shape, os.path.join("benchmarks", "checkpoints")), args.shape
    kw = engine_kwargs(args, model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        args.vocab = min(10000, json.load(f)["vocab_size"])
    if args.block_size is None:
        kw.pop("kvcache_block_size")
    info = device_info(device)
    print(f"# {shape} on {info['gpu']}, torch {info['torch']}, triton {info['triton']}", flush=True)

    names = ["ladder"] if args.ladder else args.workload
    for name in names:
        wl = get_workload(name, args)
        result = {**info, "shape": shape, "workload": name, "workload_description": wl.description, "tp": args.tp}
        if name == "ladder":
            result["ladder"] = []
            for lesson, what, overrides in rungs(device):
                limit = args.ladder_sequential_seqs if overrides.get("max_num_seqs") == 1 else None
                r = run_aios(model_dir, wl, {**kw, **overrides}, limit=limit)
                r.update(lesson=lesson, adds=what, note=f"first {limit} sequences" if limit else "")
                result["ladder"].append(r)
                print(f"L{lesson:>3}  {r['output_tok_per_s']:>10,.1f} out tok/s  {what}", flush=True)
        elif name == "prefix":
            result["caching_off"] = run_aios(model_dir, wl, {**kw, "enable_prefix_caching": False})
            result["caching_on"] = run_aios(model_dir, wl, {**kw, "enable_prefix_caching": True})
            for k in ("caching_off", "caching_on"):
                r = result[k]
                print(f"{k:12s} prefill tokens computed {r['prefill_tokens_computed']:>8,}  "
                      f"TTFT p50 {r['ttft_ms'].get('p50')} ms  {r['output_tok_per_s']:,.0f} out tok/s", flush=True)
        else:
            result.update(run_aios(model_dir, wl, kw, profile=args.profile))
            print(f"aios {name}: {result['output_tok_per_s']:,.1f} out tok/s, {result['total_tok_per_s']:,.1f} "
                  f"total tok/s, TTFT {result['ttft_ms']}, ITL {result['itl_ms']}"
                  + (f", batch-1 decode {result['decode_tok_per_s']} tok/s" if "decode_tok_per_s" in result else ""),
                  flush=True)
        if args.peer and device == "cuda":
            result["peers"] = {}
            for peer in args.peer:
                limit = args.hf_limit if peer == "hf" and name == "standard" else None
                p = run_peer(peer, model_dir, name, args, limit)
                result["peers"][peer] = p
                mine = result["ladder"][-1] if name == "ladder" else result
                if "output_tok_per_s" in p and "output_tok_per_s" in mine:
                    p["aios_ratio"] = round(mine["output_tok_per_s"] / p["output_tok_per_s"], 3)
                    print(f"  {peer} {p.get('version')}: {p['output_tok_per_s']:,.1f} out tok/s "
                          f"(aios / {peer} = {p['aios_ratio']:.2f}x){' — ' + p['note'] if 'note' in p else ''}",
                          flush=True)
                else:
                    print(f"  {peer}: failed: {p.get('error', '')[-600:]}", flush=True)
        path = save(result, name + (f"-{args.tag}" if args.tag else ""), args.out)
        if name == "ladder":
            plot_ladder(result, path.replace(".json", ".png"))
        print(f"# wrote {path}", flush=True)
    return 0
