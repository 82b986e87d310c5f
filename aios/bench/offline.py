"""Measure AIOS (and peers, side by side) on the standard workloads; write JSON + plots.

`aios bench` and `python benchmark.py` (from a clone) run this; the flags are the same.

    python benchmark.py                               # Qwen3-0.6B shape, standard workload, on the GPU
    python benchmark.py --shape qwen3-8b --workload standard batch1 batch32
    python benchmark.py --peer hf --peer vllm         # peers in their own processes, same workload
    python benchmark.py --ladder                      # every lesson's settings on one workload
    python benchmark.py --workload prefix             # prefix caching off vs on
    python benchmark.py --model /path/to/Qwen3-0.6B   # a real checkpoint instead of random weights
    python benchmark.py --suite --peer vllm --max-seconds 500     # every workload, one start per engine
    python benchmark.py --suite standard batch1 --peer vllm       # some of them
    python benchmark.py --scaling concurrency --peer vllm         # throughput vs 1 ... 1024 sequences
    python benchmark.py --scaling prompt-len --peer vllm          # prefill and decode vs 1k ... 32k tokens
    python benchmark.py --scaling concurrency prompt-len --peer vllm   # both curves on one start per engine

Workloads (aios/bench/workloads.py): standard = 256 seqs, input/output lengths U[100, 1024], seed 0,
ignore_eos, temperature 0.6 (what nano-vllm reports); short = 512 seqs, input U[20, 400], output
U[20, 600]; batch1 / batch32 = in 128, out 512, greedy; prefix = 64 requests behind one 2048-token
system prompt; long16k(-warm) = 16 prompts of 16k tokens, cold (warm) prefix cache; json1 / json64
= a JSON schema; logprobs = batch32 with logprobs=5. Without --suite each workload starts its own
AIOS engine (prefix: caching off, then on); with --suite every engine starts once for all of them,
each in its own process (aios/bench/suite.py). The engine runs at its own defaults (aios.Config
picks max_num_seqs / max_num_batched_tokens from the device) unless the flags say otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import glob
import json
import os
import time

import torch

from aios.bench import report, suite, workloads
from aios.bench.aios_runner import sampling_params
from aios.bench.engine_runner import percentiles_ms as percentiles
from aios.bench.ladder import rungs
from aios.bench.provenance import device_info
from aios.bench.shapes import SHAPES, write_shape

RESULTS = os.path.join("benchmarks", "results")      # under the current directory (a clone's root: the repo's)


def get_workload(name: str, args: argparse.Namespace) -> workloads.Workload:
    return workloads.by_name(name, num_seqs=args.ladder_num_seqs if name == "ladder" else args.num_seqs,
                             input_len=args.input_len, output_len=args.output_len, seed=args.seed, vocab=args.vocab)


def run_aios(model_dir: str, wl: workloads.Workload, engine_kwargs: dict, limit: int | None = None,
             use_tqdm: bool = False, profile: bool = False) -> dict:
    from aios import LLM, SamplingParams

    prompts = wl.prompts[:limit]
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
    params = sampling_params(wl)[:limit]
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


def runner_options(args: argparse.Namespace, kw: dict) -> dict:
    """What every engine's runner process needs to rebuild the workloads and start its engine."""
    return dict(num_seqs=args.num_seqs, input_len=args.input_len, output_len=args.output_len, seed=args.seed,
                vocab=args.vocab, scaling_output_len=args.scaling_output_len,
                scaling_prompt_tokens=args.scaling_prompt_tokens, engine_kwargs=kw,
                gpu_memory_utilization=args.gpu_memory_utilization, vllm_log_stats=args.vllm_log_stats,
                enforce_eager=args.enforce_eager, hf_batch_size=args.hf_batch_size, device=args.device)


def run_peer(peer: str, model_dir: str, workload: str, args: argparse.Namespace, kw: dict,
             limit: int | None) -> dict:
    """One workload on a peer, in its own process (aios/bench/engine_runner.py): its row + its info."""
    options = {**runner_options(args, kw), "max_model_len": kw["max_model_len"], "limit": limit,
               "num_seqs": args.ladder_num_seqs if workload == "ladder" else args.num_seqs}
    os.makedirs(args.log_dir, exist_ok=True)
    out = suite.run_engine(peer, model_dir, [workload], options, deadline=1e12,
                           log_path=os.path.join(args.log_dir, f"{peer}-{workload}.log"))
    row = out["rows"][workload]
    if "output_tok_per_s" not in row:
        return {"engine": peer, "error": row.get("skipped") or row.get("error"), **out["info"]}
    return {**row, **out["info"]}


def prompt_vocab(model_dir: str) -> int:
    """Prompt ids are drawn below this: 10,000, or the model's or its tokenizer's vocabulary if smaller."""
    with open(os.path.join(model_dir, "config.json")) as f:
        vocab = min(10000, json.load(f)["vocab_size"])
    path = os.path.join(model_dir, "tokenizer.json")
    if os.path.exists(path):
        with open(path) as f:
            tok = json.load(f)
        vocab = min(vocab, len(tok.get("model", {}).get("vocab", {})) or vocab)
    return vocab


def engine_kwargs(args: argparse.Namespace, model_dir: str) -> dict:
    kw = dict(device=args.device, dtype=args.dtype, max_model_len=args.max_model_len,
              max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
              kvcache_block_size=args.block_size, gpu_memory_utilization=args.gpu_memory_utilization,
              enforce_eager=args.enforce_eager, tensor_parallel_size=args.tp,
              async_scheduling=not args.no_async_scheduling)
    if args.no_silu_in_gemv:
        kw["silu_in_gemv"] = False
    if args.attention_backend != "triton":
        kw["attention_backend"] = args.attention_backend
    if args.moe_gemm != "triton":
        kw["moe_gemm"] = args.moe_gemm
    if args.decode_gemm != "cublas":
        kw["decode_gemm"] = args.decode_gemm
    if args.cudagraph_mixed_tokens is not None:
        kw["cudagraph_mixed_tokens"] = args.cudagraph_mixed_tokens
    if not glob.glob(os.path.join(model_dir, "*.safetensors")):
        kw["load_format"] = "dummy"
    if not os.path.exists(os.path.join(model_dir, "tokenizer.json")):
        kw["skip_tokenizer_init"] = True
    return kw


def save(result: dict, name: str, out_dir: str, write: bool = True) -> str:
    """Write result as <date>-<gpu>-<shape>-<name>.json under out_dir; return the path (without
    ".json" and without writing when write=False: the stem of a suite's files)."""
    os.makedirs(out_dir, exist_ok=True)
    gpu = result["gpu"].split("(")[0].strip().replace(" ", "-").lower()
    date = datetime.date.today().isoformat()
    stem = os.path.join(out_dir, f"{date}-{gpu}-{result['shape']}-{name}")
    if not write:
        return stem
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    return stem + ".json"


def main(argv: list[str] | None = None, prog: str | None = None, results_dir: str = RESULTS) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a real checkpoint dir (default: random weights of --shape)")
    ap.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES), metavar="SHAPE",
                    help=f"random weights of a published config.json: {' | '.join(SHAPES)}")
    ap.add_argument("--workload", nargs="+", default=["standard"],
                    help="standard | short | batch1 | batch32 | batchN | prefix | long16k | ... (several allowed; "
                         "each on a fresh AIOS engine)")
    ap.add_argument("--suite", nargs="*", default=None, metavar="WORKLOAD",
                    help=f"one start per engine for all these workloads (none named: {' '.join(workloads.SUITE)})")
    ap.add_argument("--scaling", nargs="+", choices=["concurrency", "prompt-len"], default=None,
                    help="throughput vs 1 ... 1024 sequences, or vs prompts of 1k ... 32k tokens (a suite each)")
    ap.add_argument("--points", type=int, nargs="+", default=None,
                    help="--scaling (one curve): these sequence counts / prompt lengths, not 1 ... 1024 / 1k ... 32k")
    ap.add_argument("--scaling-output-len", type=int, default=256, help="--scaling concurrency: tokens each sequence "
                    "generates (in 128)")
    ap.add_argument("--scaling-prompt-tokens", type=int, default=65536,
                    help="--scaling prompt-len: prompt tokens at each point (as many prompts of L tokens)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="--suite / --scaling budget: stop cleanly (results still written) before it runs out")
    ap.add_argument("--vllm-log-stats", action="store_true",
                    help="vLLM keeps per-request timings (TTFT, prompt tok/s of long prompts); off is its default")
    ap.add_argument("--no-aios", action="store_true", help="--suite / --scaling: run only the peers")
    ap.add_argument("--log-dir", default=os.path.join("benchmarks", "logs"),
                    help="each engine process's stderr goes here (default: %(default)s)")
    ap.add_argument("--ladder", action="store_true", help="run every lesson's settings (see aios/bench/ladder.py)")
    ap.add_argument("--ladder-num-seqs", type=int, default=64)
    ap.add_argument("--ladder-sequential-seqs", type=int, default=8,
                    help="the one-sequence-at-a-time rung runs only this many (it is slow)")
    ap.add_argument("--peer", action="append", default=[], choices=["hf", "vllm"], help="peers, each in its process")
    ap.add_argument("--hf-limit", type=int, default=64,
                    help="HF runs only the first N sequences of the standard workload (of every one with --suite)")
    ap.add_argument("--hf-batch-size", type=int, default=64, help="HF's static batch size")
    ap.add_argument("--num-seqs", type=int, default=256)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--block-size", type=int, default=None, help="KV block size (default: the engine's)")
    ap.add_argument("--max-model-len", type=int, default=None,
                    help="default: 2048 (at least the workload's longest sequence); --suite: the longest sequence")
    ap.add_argument("--max-num-seqs", type=int, default=None, help="default: aios.Config's, picked from the device")
    ap.add_argument("--max-num-batched-tokens", type=int, default=None,
                    help="default: aios.Config's, picked from the device (16,384 on GPUs of >= 70 GiB, as vLLM)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--no-async-scheduling", action="store_true", help="wait for each step's tokens")
    ap.add_argument("--no-silu-in-gemv", action="store_true",
                    help="Config.silu_in_gemv=False: a one-token MLP's SiLU * up as a launch of its own")
    ap.add_argument("--attention-backend", choices=("triton", "triton-tma", "torch"), default="triton",
                    help="Config.attention_backend (triton-tma: prefill through Hopper TMA loads, opt-in)")
    ap.add_argument("--moe-gemm", choices=("triton", "tma"), default="triton",
                    help="Config.moe_gemm (tma: the MoE's grouped GEMMs through Hopper TMA loads, opt-in)")
    ap.add_argument("--decode-gemm", choices=("cublas", "skinny", "auto"), default="cublas",
                    help="Config.decode_gemm: the GEMM of 2 ... 256 rows; skinny: 2 ... 64 rows through the Triton "
                         "skinny GEMM; auto: per layer shape and row count, the fastest of cuBLAS, cuBLASLt and "
                         "the skinny GEMM, timed at start-up (opt-in)")
    ap.add_argument("--cudagraph-mixed-tokens", type=int, default=None, metavar="N",
                    help="Config.cudagraph_mixed_tokens: steps holding prefill tokens, up to N tokens, replay "
                         "CUDA graphs too; 0: they run eagerly (default: the engine's, 512 on a GPU)")
    ap.add_argument("--profile", action="store_true", help="after each run, a per-step time breakdown + kernel table")
    ap.add_argument("--out", default=results_dir, help="where JSON results and plots go (default: %(default)s)")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    args = ap.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    suite_names = (list(args.suite) or list(workloads.SUITE)) if args.suite is not None else None
    if args.model:
        model_dir, shape = args.model, os.path.basename(os.path.normpath(args.model)).lower()
    else:
        # a tokenizer only where a workload needs one (structured output), so the others run as before
        tok = any(workloads.by_name(n).needs_tokenizer for n in suite_names or args.workload if n != "ladder")
        model_dir = write_shape(args.shape, os.path.join("benchmarks", "checkpoints"), with_tokenizer=tok)
        shape = args.shape
    args.vocab = prompt_vocab(model_dir)
    info = device_info(device)
    print(f"# {shape} on {info['gpu']}, torch {info['torch']}, triton {info['triton']}", flush=True)
    if suite_names is not None or args.scaling:
        return run_suite(args, model_dir, shape, suite_names, info)

    for name in ["ladder"] if args.ladder else args.workload:
        wl = get_workload(name, args)
        if wl.after:
            raise SystemExit(f"{name} runs on the prefix cache {wl.after} leaves: use --suite {wl.after} {name}")
        args_len = args.max_model_len
        args.max_model_len = args_len or max(2048, wl.max_seq_len)
        kw = engine_kwargs(args, model_dir)
        args.max_model_len = args_len
        if args.block_size is None:
            kw.pop("kvcache_block_size")
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
        if args.peer and (device == "cuda" or set(args.peer) <= {"hf"}):   # vLLM needs the GPU
            result["peers"] = {}
            for peer in args.peer:
                limit = args.hf_limit if peer == "hf" and name == "standard" else None
                p = run_peer(peer, model_dir, name, args, {**kw}, limit)
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
            report.plot_ladder(result, path.replace(".json", ".png"))
        print(f"# wrote {path}", flush=True)
    return 0


def run_suite(args: argparse.Namespace, model_dir: str, shape: str, names: list[str] | None, info: dict) -> int:
    """--suite / --scaling: every engine once over every workload (aios/bench/suite.py); table, JSON, PNG."""
    if args.scaling:
        if args.points and len(args.scaling) > 1:
            raise SystemExit("--points goes with one --scaling curve")
        with open(os.path.join(model_dir, "config.json")) as f:
            max_pos = json.load(f).get("max_position_embeddings", 1 << 30)
        names = [n for kind in args.scaling for n in suite.scaling_workloads(kind, max_pos, args.points)]
    mode = "scaling-" + "-".join(args.scaling) if args.scaling else "suite"
    engines = ([] if args.no_aios else ["aios"]) + list(dict.fromkeys(args.peer))
    if not engines:
        raise SystemExit("--no-aios with no --peer: nothing to run")
    kw = engine_kwargs(args, model_dir)
    if args.block_size is None:
        kw.pop("kvcache_block_size")
    options = {**runner_options(args, kw), "max_model_len": args.max_model_len}
    stem = save({**info, "shape": shape}, mode + (f"-{args.tag}" if args.tag else ""), args.out, write=False)
    os.makedirs(args.log_dir, exist_ok=True)
    log_prefix = os.path.join(args.log_dir, os.path.basename(stem))
    result = suite.run(engines, model_dir, names, options, args.max_seconds, log_prefix,
                       peer_options={"hf": {"limit": args.hf_limit}})
    doc = report.to_json(result, {**info, "tp": args.tp}, shape, mode)
    print(report.table(doc), flush=True)
    report.write(doc, stem + ".json")
    if args.scaling:
        pngs = [stem + (f"-{kind}" if len(args.scaling) > 1 else "") + ".png" for kind in args.scaling]
        plotted = all([report.plot_scaling(doc, kind, png) for kind, png in zip(args.scaling, pngs)])
    else:
        plotted = report.plot_suite(doc, stem + ".png")
    print(f"# wrote {stem}.json" + (f" and {stem}*.png" if plotted else "")
          + f" in {result['wall_s']:.0f} s; engine logs {log_prefix}-*.log", flush=True)
    return 0
