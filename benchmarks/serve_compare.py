"""Serving comparison: OpenAI-compatible servers (AIOS, vLLM, any command) under the same client and loads.

What it measures: for each engine and each load, what benchmarks/serve.py measures (output and
total tok/s, TTFT, inter-token latency and end-to-end latency percentiles, client and server CPU),
and, per load, how the first engine of --engines compares with each of the others.

How: one seeded workload (--seed: the same prompts and output lengths, every request `ignore_eos`)
is built once and sent to every engine under every load, by serve.py's client (`run_load`), with the
same arrival seeds. Engines run one at a time, so they never share the GPU: each server is launched
ONCE on a free port, waited for (GET /v1/models), given every load in --loads order, and stopped
(SIGINT) before the next starts. The only setting the script changes from each server's defaults is
max_model_len (--max-model-len, the same for all). An engine that fails to start, or a load that
fails, leaves rows holding its error; the other engines still run.

Loads: `burst` (every request at once), `rate:R` (Poisson arrivals at R requests/s), `concurrency:N`
(N clients, each sending its next request when its last one ends).

Reading the ratios ("first vs other", in the JSON's `ratios[load][other]` and the table's last
column): every ratio is oriented so that > 1 means the FIRST engine is better, < 1 the other one:
output tok/s is first / other; TTFT p50 / p99 and ITL p50 / p99 are other / first (a latency).
1.25 on ttft_ms_p99 reads "the other engine's p99 time to first token is 1.25x the first's".

    python -m benchmarks.serve_compare --shape qwen3-0.6b                       # aios vs vllm, default loads
    python -m benchmarks.serve_compare --model DIR --engines aios --loads burst concurrency:64
    python -m benchmarks.serve_compare --shape qwen3-0.6b --engines aios mine \\
        --engine-cmd "mine=python -m my.server --model {model} --port {port}"

On the GPU machine (no package registry there), vLLM's OpenAI server needs its wheels on PYTHONPATH:
scripts/prepare_vllm_server_wheels.sh's header says how to carry and extract them to /tmp/site; then

    PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 \\
      python -m benchmarks.serve_compare --shape qwen3-0.6b --launch-timeout 300

vLLM's start-up (torch.compile, CUDA graphs) takes over 100 s: budget --launch-timeout for it.

Output, in --out: `<date>-<gpu or cpu>-<shape or model>-serve-compare[-tag]`.json (settings, each
engine's launch command, one row per engine x load holding serve.py's summary, the ratios), .md (the
table printed at the end) and .png (throughput and latency bars per load; skipped without matplotlib).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass

from aios.bench.provenance import git_sha, gpu_name
from aios.bench.shapes import SHAPES, write_shape
from benchmarks import serve
from benchmarks.serve_report import RATIO_CONVENTION, fmt, plot, ratios, slowest_first_tokens, table

# Each template holds the placeholders {model} and {port} (and, for the built-ins, {max_model_len}),
# replaced by plain substitution: a custom command's other braces (python -c "...{}...") stay as written.
BUILTIN_COMMANDS = {
    "aios": "{python} -m aios.server --model {model} --port {port} --max-model-len {max_model_len} "
            "--load-format dummy --skip-tokenizer-init --log-level warning",
    "vllm": "{python} -m vllm.entrypoints.openai.api_server --model {model} --port {port} "
            "--max-model-len {max_model_len} --load-format dummy --skip-tokenizer-init",
}
DEFAULT_LOADS = ("burst", "rate:16", "rate:32")



@dataclass(frozen=True)
class Load:
    """One load of serve.py: `burst` (rate inf), `rate:R` (Poisson, R req/s) or `concurrency:N`."""

    name: str
    rate: float = float("inf")
    concurrency: int | None = None

    def serve_argv(self) -> list[str]:
        """serve.py's flags for this load."""
        return ["--concurrency", str(self.concurrency)] if self.concurrency else ["--rate", str(self.rate)]


def parse_load(text: str) -> Load:
    """argparse type of --loads: burst, rate:R (R > 0, finite) or concurrency:N (N >= 1)."""
    kind, _, value = text.partition(":")
    try:
        if text == "burst":
            return Load(text)
        if kind == "rate" and 0 < float(value) < float("inf"):
            return Load(text, rate=float(value))
        if kind == "concurrency" and int(value) >= 1:
            return Load(text, concurrency=int(value))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: a load is burst, rate:R (R > 0 requests/s) or concurrency:N "
                                     f"(N >= 1 clients)")


def parse_engine_cmd(text: str) -> tuple[str, str]:
    """argparse type of --engine-cmd: NAME=CMD, CMD holding the literal {port} and {model}."""
    name, sep, cmd = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=CMD, NAME of letters, digits, '.', '_', '-'")
    missing = [p for p in ("{port}", "{model}") if p not in cmd]
    if missing:
        raise argparse.ArgumentTypeError(f"{name}'s command lacks {' and '.join(missing)}: {cmd!r}")
    return name, cmd


def parse_variant(text: str) -> tuple[str, str, str]:
    """argparse type of --variant: NAME=BASE:ARGS, a built-in engine's command under another name
    with ARGS appended (an A/B of one engine's settings without writing its whole command)."""
    name, sep, rest = text.partition("=")
    base, colon, extra = rest.partition(":")
    if not sep or not colon or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or base not in BUILTIN_COMMANDS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=BASE:ARGS, BASE one of "
                                         f"{', '.join(BUILTIN_COMMANDS)}, NAME of letters, digits, '.', '_', '-'")
    try:
        shlex.split(extra)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{name}'s arguments: {e}") from None
    return name, base, extra.strip()


def free_port() -> int:
    """A port nothing listens on now (the OS picks it for a socket bound to port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(template: str, model_dir: str, port: int, max_model_len: int) -> str:
    """The template with its placeholders replaced (the paths quoted for serve.launch's shlex.split)."""
    values = {"{python}": shlex.quote(sys.executable), "{model}": shlex.quote(model_dir), "{port}": str(port),
              "{max_model_len}": str(max_model_len)}
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


def serve_args(args: argparse.Namespace, load: Load, engine: str = "", url: str = "", model: str = "",
               cmd: str = "") -> argparse.Namespace:
    """serve.py's settings for one load, through its own parse_args (so its defaults and checks apply)."""
    argv = ["--num-requests", str(args.num_requests), "--num-clients", str(args.num_clients),
            "--input-len", *map(str, args.input_len), "--output-len", *map(str, args.output_len),
            "--seed", str(args.seed), "--engine", engine or "-", *load.serve_argv()]
    argv += ["--url", url] if url else []
    argv += ["--model", model] if model else []
    argv += ["--launch", cmd] if cmd else []
    return serve.parse_args(argv)


def run_engine(args: argparse.Namespace, engine: str, template: str, model_dir: str,
               workload: list[tuple[list[int], int]]) -> tuple[dict, list[dict]]:
    """Launch one engine, run every load on it in order, stop it. Returns (its info: cmd, launch_s,
    error; one row per load). Never raises for a failure of the engine: the rows carry the error."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = fill(template, model_dir, port, args.max_model_len)
    info: dict = {"cmd": cmd, "launch_s": None, "error": None}
    print(f"[{engine}] starting: {cmd}", flush=True)
    start = time.perf_counter()
    try:
        proc = serve.launch(cmd, url, args.launch_timeout)
    except (RuntimeError, OSError, ValueError) as e:    # no answer in time, no such program, bad quoting
        info["error"] = str(e)
        print(f"[{engine}] failed to start: {e}", flush=True)
        return info, [{"engine": engine, "load": load.name, "summary": None, "error": str(e)} for load in args.loads]
    info["launch_s"] = time.perf_counter() - start
    rows = []
    try:
        for load in args.loads:
            row: dict = {"engine": engine, "load": load.name, "summary": None, "error": None}
            rows.append(row)
            if proc.poll() is not None:
                row["error"] = f"the server exited with status {proc.returncode} before this load"
                continue
            try:
                sargs = serve_args(args, load, engine, url, serve.served_model(url), cmd)
                row["summary"] = serve.run_load(sargs, workload)
            except Exception as e:               # one load's failure must not cost the other rows
                row["error"] = f"{type(e).__name__}: {e}"
            print(f"[{engine}] {load.name}: {progress(row)}", flush=True)
    finally:
        serve.stop(proc)
    return info, rows


def progress(row: dict) -> str:
    s = row["summary"]
    if s is None:
        return f"error: {row['error']}"
    ttft, itl = s["ttft_ms"]["p50"], s["itl_ms"]["p50"]
    return (f"{s['completed']}/{s['num_requests']} requests in {s['duration_s']:.1f} s, "
            f"{s['output_tok_per_s']:.1f} out tok/s, TTFT p50 {fmt(ttft)} ms, ITL p50 {fmt(itl)} ms"
            + (f", {s['failed']} failed: {s['errors']}" if s["failed"] else ""))


def output_stem(args: argparse.Namespace, model_label: str, gpu: str | None) -> str:
    """<out>/<date>-<gpu or cpu>-<model>-serve-compare[-tag], the name only of [A-Za-z0-9._-]."""
    device = gpu.split("(")[0].strip().replace(" ", "-").lower() if gpu else "cpu"
    name = f"{datetime.date.today()}-{device}-{model_label}-serve-compare" + (f"-{args.tag}" if args.tag else "")
    return os.path.join(args.out, re.sub(r"[^A-Za-z0-9._-]+", "-", name))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m benchmarks.serve_compare --shape qwen3-0.6b --engines aios vllm \\\n"
               "      --loads burst rate:16 rate:32 --num-requests 256 --num-clients 4\n"
               "  python -m benchmarks.serve_compare --shape qwen3-0.6b --engines aios eager \\\n"
               "      --variant 'eager=aios:--cudagraph-mixed-tokens 0'       # an A/B of one setting\n\n"
               "ratios: > 1 means the first engine of --engines is better (output tok/s first / other;\n"
               "TTFT and ITL other / first). Results: --out/<date>-<gpu>-<model>-serve-compare[-tag].json/.md/.png")
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--shape", choices=list(SHAPES), metavar="NAME",
                       help=f"random weights of a published shape: {', '.join(SHAPES)}")
    model.add_argument("--model", metavar="DIR", help="a checkpoint directory (the built-in commands load its "
                                                      "config with random weights: --load-format dummy)")
    ap.add_argument("--engines", nargs="+", default=None, metavar="NAME",
                    help="in order; the first is the one the ratios compare (default: aios vllm, or the "
                         "--engine-cmd names when only those are given)")
    ap.add_argument("--engine-cmd", action="append", type=parse_engine_cmd, default=[], metavar="NAME=CMD",
                    help="a custom engine: CMD holds {port} and {model} (and may hold {max_model_len}); repeatable")
    ap.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME=BASE:ARGS",
                    help="a built-in engine under another name with ARGS appended, e.g. "
                         "'aios-8k=aios:--max-num-batched-tokens 8192'; repeatable")
    ap.add_argument("--aios-args", default="", help="appended verbatim to aios's command, e.g. '--dtype bfloat16'")
    ap.add_argument("--vllm-args", default="", help="appended verbatim to vllm's command")
    ap.add_argument("--loads", nargs="+", type=parse_load, default=[parse_load(x) for x in DEFAULT_LOADS],
                    metavar="LOAD", help="burst, rate:R or concurrency:N, run in order (default: "
                                         f"{' '.join(DEFAULT_LOADS)})")
    ap.add_argument("--max-model-len", type=int, default=2048, help="the same for every engine (default: 2048)")
    ap.add_argument("--num-requests", type=int, default=256, help="per load (default: %(default)s)")
    ap.add_argument("--num-clients", type=int, default=4, help="client processes, see serve.py (default: 4)")
    ap.add_argument("--input-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"),
                    help="prompt tokens, uniform in [MIN, MAX] (default: 100 1024)")
    ap.add_argument("--output-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"),
                    help="output tokens, uniform in [MIN, MAX] (default: 100 1024)")
    ap.add_argument("--seed", type=int, default=0, help="the workload and arrivals, the same for all (default: 0)")
    ap.add_argument("--launch-timeout", type=float, default=600.0,
                    help="seconds each server gets to answer GET /v1/models (default: 600)")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"), help="(default: %(default)s)")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    args = ap.parse_args(argv)

    custom = dict(args.engine_cmd)
    for name, base, extra in args.variant:
        custom[name] = f"{BUILTIN_COMMANDS[base]} {extra}".strip()
    if len(custom) != len(args.engine_cmd) + len(args.variant) or set(custom) & set(BUILTIN_COMMANDS):
        ap.error("--engine-cmd and --variant names must differ from each other and from the built-ins")
    args.engines = args.engines or (list(custom) if custom else ["aios", "vllm"])
    unknown = [e for e in args.engines if e not in custom and e not in BUILTIN_COMMANDS]
    if unknown:
        ap.error(f"no command for engine(s) {', '.join(unknown)}: built in are {', '.join(BUILTIN_COMMANDS)}; "
                 "give others with --engine-cmd NAME=CMD")
    if len(set(args.engines)) != len(args.engines) or len({x.name for x in args.loads}) != len(args.loads):
        ap.error("--engines and --loads must not repeat a name")
    for flag in ("aios_args", "vllm_args"):
        try:
            shlex.split(getattr(args, flag))
        except ValueError as e:
            ap.error(f"--{flag.replace('_', '-')}: {e}")
    args.commands = {e: custom.get(e) or f"{BUILTIN_COMMANDS[e]} {getattr(args, f'{e}_args')}".strip()
                     for e in args.engines}
    for flag in ("input_len", "output_len"):
        lo, hi = getattr(args, flag)
        if not 0 < lo <= hi:
            ap.error(f"--{flag.replace('_', '-')} needs 0 < MIN <= MAX, got {lo} {hi}")
    if min(args.max_model_len, args.num_requests, args.num_clients) < 1 or args.launch_timeout <= 0:
        ap.error("--max-model-len, --num-requests, --num-clients and --launch-timeout must be positive")
    if args.input_len[1] + args.output_len[1] > args.max_model_len:
        ap.error(f"--input-len MAX + --output-len MAX must fit --max-model-len {args.max_model_len}")
    if any(x.concurrency and x.concurrency < args.num_clients for x in args.loads):
        ap.error("a concurrency:N load needs N >= --num-clients")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 0 when every engine x load row completed every request, else 1."""
    args = parse_args(argv)
    shape_root = tempfile.mkdtemp(prefix="aios-serve-compare-") if args.shape else None
    try:
        model_dir = write_shape(args.shape, shape_root) if args.shape else args.model
        model_label = args.shape or os.path.basename(os.path.normpath(args.model)).lower()
        workload = serve.make_workload(serve_args(args, args.loads[0]))   # one workload for every engine and load
        gpu = gpu_name()
        doc: dict = {
            "benchmark": "serve-compare", "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "aios_git": git_sha(), "gpu": gpu,
            "settings": {"shape": args.shape, "model": args.model, "model_label": model_label,
                         "engines": args.engines, "loads": [x.name for x in args.loads],
                         "max_model_len": args.max_model_len, "num_requests": args.num_requests,
                         "num_clients": args.num_clients, "input_len": args.input_len,
                         "output_len": args.output_len, "seed": args.seed, "launch_timeout": args.launch_timeout},
            "engines": {}, "rows": [], "ratio_convention": RATIO_CONVENTION,
        }
        for engine in args.engines:
            info, rows = run_engine(args, engine, args.commands[engine], model_dir, workload)
            doc["engines"][engine] = info
            doc["rows"] += rows
    finally:
        if shape_root:
            shutil.rmtree(shape_root, ignore_errors=True)
    doc["ratios"] = ratios(doc)
    os.makedirs(args.out, exist_ok=True)
    stem = output_stem(args, model_label, gpu)
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=2)
    text = "\n\n".join(filter(None, [table(doc), slowest_first_tokens(doc)]))
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    print("\n" + text + "\n")
    print(f"wrote {stem}.json, {stem}.md" + (f", {stem}.png" if plot(doc, stem + ".png") else ""))
    complete = all(r["summary"] and r["summary"]["failed"] == 0 for r in doc["rows"])
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
