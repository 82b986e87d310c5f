"""Serving benchmark: a load generator for an OpenAI-compatible server (aios.server, vLLM, SGLang).

    python -m aios.server --model /path/to/Qwen3-0.6B &                  # or any OpenAI-compatible server
    python benchmarks/serve.py --rate 8 --num-requests 256               # Poisson arrivals, 8 req/s
    python benchmarks/serve.py --concurrency 32 --num-requests 256 --out benchmarks/results
    python benchmarks/serve.py --launch "python -m aios.server --model DIR --skip-tokenizer-init --port 8000"

Each request is a streamed POST /v1/completions (httpx, asyncio) of a random token-id prompt whose
length is uniform in --input-len, asking for exactly a length uniform in --output-len
(`ignore_eos`, a vLLM extension aios.server also takes). Arrivals are a Poisson process at --rate
requests per second, or --concurrency clients each sending its next request when the last one
ends; with neither, every request is sent at once. Before the load, each client process sends one
short request of its own, not measured, and the processes then start the load together: a fresh
process's first request pays for its connection and for what httpx sets up on first use, and
without the warm-up those ~40 ms (on an H200 machine's host) land on the load's first
--num-clients first tokens, which is most of a 256-request TTFT p99 (`--no-warm-up` measures them).

Reported: request and token throughput; time to first token (TTFT), inter-token latency (ITL: the
gaps between streamed chunks) and end-to-end latency, mean / p50 / p90 / p99, in ms. With --out,
one flat JSON file in that folder (see DESIGN.md, Benchmarks). With --launch, the script starts the
server itself, waits until /v1/models answers, runs, and stops it (SIGINT: a graceful shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty

import httpx
import numpy as np

from aios.bench.provenance import git_sha, gpu_name


@dataclass
class RequestResult:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    sent_at: float = 0.0          # wall clock (time.time()): comparable across client processes


def make_workload(args: argparse.Namespace) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    lo, hi = args.token_id_range
    return [([rng.randrange(lo, hi) for _ in range(rng.randint(*args.input_len))], rng.randint(*args.output_len))
            for _ in range(args.num_requests)]


async def send(http: httpx.AsyncClient, args: argparse.Namespace, prompt: list[int], max_tokens: int) -> RequestResult:
    # return_token_ids (vLLM's extension; aios takes it too): a server without a tokenizer streams
    # chunks with empty text, and their token ids are what shows a token arrived
    body = {"model": args.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": args.temperature,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}
    result, start = RequestResult(sent_at=time.time()), time.perf_counter()
    last = None
    try:
        async with http.stream("POST", f"{args.url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread()).decode()[:200]}"
                return result
            buffer = b""
            async for data in response.aiter_bytes():         # events split at blank lines (SSE)
                *events, buffer = (buffer + data).split(b"\n\n")
                now = time.perf_counter()                     # the events of one read arrived together
                for event in events:
                    if not event.startswith(b"data: ") or event == b"data: [DONE]":
                        continue
                    chunk = json.loads(event[len(b"data: "):])
                    if "error" in chunk:
                        result.error = chunk["error"].get("message", "error event")
                        return result
                    if chunk.get("usage"):
                        result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                        result.output_tokens = chunk["usage"]["completion_tokens"]
                    # a chunk carries text, or (no tokenizer) only token ids
                    if chunk["choices"] and (chunk["choices"][0]["text"] or chunk["choices"][0].get("token_ids")):
                        if last is None:
                            result.ttft_s = now - start
                        else:
                            result.itl_s.append(now - last)
                        last = now
        result.e2e_s = time.perf_counter() - start
        result.ok = True
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


async def warm_up(http: httpx.AsyncClient, args: argparse.Namespace, prompt: list[int]) -> None:
    """One short streamed request (a few of the prompt's tokens, 2 out), not measured: the process's
    first connection and httpx's first-use setup are paid here instead of by the load's first
    request. Raises RuntimeError when it fails: a load behind a failing warm-up would fail too."""
    result = await send(http, args, prompt[:4], 2)
    if not result.ok:
        raise RuntimeError(f"the warm-up request failed: {result.error}")


async def run(args: argparse.Namespace, workload: list[tuple[list[int], int]], seed: int,
              ready: Callable[[], None] = lambda: None) -> list[RequestResult]:
    """One client process's share: its requests as a Poisson process (or all at once), or its
    --concurrency clients each sending its next request when the last one ends. With args.warm_up,
    one warm-up request first; `ready()` is called before the load (it blocks until every client
    process is ready, run_clients)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), limits=limits) as http:
        if args.warm_up and workload:
            await warm_up(http, args, workload[0][0])
        ready()
        if args.concurrency:
            queue = list(reversed(range(len(workload))))
            results = [RequestResult() for _ in workload]                 # in workload order

            async def client() -> None:
                while queue:
                    i = queue.pop()
                    results[i] = await send(http, args, *workload[i])

            await asyncio.gather(*[client() for _ in range(args.concurrency)])
            return results
        rng = random.Random(seed)
        tasks = []
        for prompt, max_tokens in workload:
            # a Poisson process from the (common) start: an exponential gap before every arrival, the
            # first included, so that --num-clients processes do not all send at once at time 0
            if args.rate != float("inf"):
                await asyncio.sleep(rng.expovariate(args.rate))
            tasks.append(asyncio.create_task(send(http, args, prompt, max_tokens)))
        return list(await asyncio.gather(*tasks))


def client_process(args: argparse.Namespace, workload: list, rank: int, ready: Callable[[], None] = lambda: None
                   ) -> tuple[list[RequestResult], float, float, float]:
    """Client process `rank` of --num-clients: every num_clients-th request, at rate / num_clients
    (the sum of independent Poisson processes is one at the summed rate) or concurrency /
    num_clients. Returns its results, start (after the warm-up) and end (wall clock) and its CPU
    seconds."""
    share = argparse.Namespace(**vars(args))
    share.rate = args.rate / args.num_clients
    if args.concurrency:
        share.concurrency = len(range(rank, args.concurrency, args.num_clients))
    times = {}

    def started() -> None:
        ready()
        times["cpu"], times["start"] = time.process_time(), time.time()

    results = asyncio.run(run(share, workload[rank::args.num_clients], seed=args.seed + 1 + rank, ready=started))
    return results, times["start"], time.time(), time.process_time() - times["cpu"]


def _client_main(args: argparse.Namespace, workload: list, rank: int, barrier, out) -> None:
    """A spawned client process: waits at `barrier` after its warm-up, puts (rank, result or error) on `out`."""
    def ready() -> None:
        barrier.wait(timeout=args.timeout)
    try:
        out.put((rank, client_process(args, workload, rank, ready)))
    except BaseException as e:              # noqa: BLE001  (the parent reports it; others must not hang)
        barrier.abort()
        out.put((rank, RuntimeError(f"client process {rank}: {type(e).__name__}: {e}")))


def run_clients(args: argparse.Namespace, workload: list) -> tuple[list[RequestResult], float, float]:
    """(results in workload order, wall seconds, client CPU seconds). One Python process parses
    ~10-15k stream chunks a second at most: past that the client, not the server, would be measured.
    Several client processes start the load together, once each has warmed up (a barrier)."""
    if args.num_clients == 1:
        outs = [client_process(args, workload, 0)]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, queue = ctx.Barrier(args.num_clients), ctx.Queue()
        procs = [ctx.Process(target=_client_main, args=(args, workload, r, barrier, queue))
                 for r in range(args.num_clients)]
        for proc in procs:
            proc.start()
        by_rank: dict = {}
        while len(by_rank) < len(procs):
            try:
                rank, out = queue.get(timeout=1.0)
                by_rank[rank] = out
            except Empty:           # a process that died without a word (a signal, a crash) fails the run
                if crashed := [p.exitcode for p in procs if p.exitcode not in (None, 0)]:
                    barrier.abort()
                    for proc in procs:
                        proc.kill()
                    raise RuntimeError(f"a client process exited with status {crashed[0]} before it reported") from None
        for proc in procs:
            proc.join()
        errors = [out for out in by_rank.values() if isinstance(out, BaseException)]
        if errors:
            raise errors[0]
        outs = [by_rank[r] for r in range(args.num_clients)]
    results: list = [None] * len(workload)
    for rank, (part, _, _, _) in enumerate(outs):
        results[rank::args.num_clients] = part
    duration = max(o[2] for o in outs) - min(o[1] for o in outs)
    return results, duration, sum(o[3] for o in outs)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    ms = np.asarray(values) * 1e3
    return {"mean": float(ms.mean()), **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}}


def server_cpu_seconds(url: str) -> float | None:
    """process_cpu_seconds_total from the server's /metrics (aios and vLLM both export it), or None."""
    try:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith("process_cpu_seconds_total"):
                return float(line.split()[-1])
    except (httpx.HTTPError, ValueError):
        pass
    return None


def request_rows(results: list[RequestResult]) -> list[dict]:
    """One row a request, in workload order, to attribute a tail: when it was sent (seconds after
    the first request), its lengths, and its TTFT, end-to-end time and longest inter-token gap."""
    t0 = min((r.sent_at for r in results), default=0.0)
    ms = lambda x: round(x * 1e3, 3)        # noqa: E731
    return [{"sent_s": round(r.sent_at - t0, 4), "ok": r.ok, "prompt_tokens": r.prompt_tokens,
             "output_tokens": r.output_tokens, "ttft_ms": ms(r.ttft_s), "e2e_ms": ms(r.e2e_s),
             "max_itl_ms": ms(max(r.itl_s, default=0.0))} for r in results]


def summarize(args: argparse.Namespace, results: list[RequestResult], duration_s: float,
              cpu: dict[str, float | None]) -> dict:
    done = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    return {
        "engine": args.engine, "benchmark": "serve", "url": args.url, "model": args.model,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "aios_git": git_sha(),
        "mode": f"concurrency={args.concurrency}" if args.concurrency else f"rate={args.rate}",
        "num_clients": args.num_clients, "warm_up": args.warm_up,
        "num_requests": len(results), "completed": len(done), "failed": len(results) - len(done),
        "input_len": list(args.input_len), "output_len": list(args.output_len), "seed": args.seed,
        "duration_s": duration_s, "request_per_s": len(done) / duration_s,
        "output_tok_per_s": out_tokens / duration_s, "total_tok_per_s": (out_tokens + prompt_tokens) / duration_s,
        "ttft_ms": percentiles([r.ttft_s for r in done]),
        "itl_ms": percentiles([gap for r in done for gap in r.itl_s]),
        "e2e_ms": percentiles([r.e2e_s for r in done]),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        # CPU seconds per second of the run: near 1.0, that process's one GIL is the bottleneck
        "client_cpu_per_s": cpu["client"] / duration_s,
        "server_cpu_per_s": cpu["server"] / duration_s if cpu["server"] is not None else None,
        "server_cmd": args.launch, "gpu": gpu_name(),
        "requests": request_rows(results),
    }


def launch(cmd: str, url: str, timeout_s: float) -> subprocess.Popen:
    """Start the server command; return once GET {url}/v1/models answers (or raise)."""
    proc = subprocess.Popen(shlex.split(cmd))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it answered: {cmd}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    stop(proc)
    raise RuntimeError(f"the server did not answer at {url} within {timeout_s:.0f} s: {cmd}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def served_model(url: str) -> str:
    """The id of the first model GET {url}/v1/models lists. Raises httpx.HTTPError when nothing
    answers there, KeyError / IndexError / ValueError when the answer is not an OpenAI model list."""
    return httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]


def run_load(args: argparse.Namespace, workload: list[tuple[list[int], int]]) -> dict:
    """Send workload to the server at args.url under the load args names (--rate, or --concurrency)
    over --num-clients processes; return summarize's dict. The server's CPU seconds are the
    difference of its /metrics before and after (None where it exports none)."""
    server_cpu = server_cpu_seconds(args.url)
    results, duration_s, client_cpu = run_clients(args, workload)
    cpu = {"client": client_cpu, "server": None}
    if server_cpu is not None and (after := server_cpu_seconds(args.url)) is not None:
        cpu["server"] = after - server_cpu
    return summarize(args, results, duration_s, cpu)


def print_report(s: dict) -> None:
    print(f"\n{s['completed']}/{s['num_requests']} requests ({s['mode']}) in {s['duration_s']:.2f} s"
          + (f", {s['failed']} failed: {s['errors']}" if s["failed"] else ""))
    print(f"throughput: {s['request_per_s']:.2f} req/s, {s['output_tok_per_s']:.1f} output tok/s, "
          f"{s['total_tok_per_s']:.1f} total tok/s")
    print(f"{'ms':<6}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}")
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        row = s[key]
        cells = "".join(f"{row[k]:>10.1f}" if row[k] is not None else f"{'-':>10}"
                        for k in ("mean", "p50", "p90", "p99"))
        print(f"{key[:-3].upper():<6}{cells}")
    server = f"{s['server_cpu_per_s']:.2f}" if s["server_cpu_per_s"] is not None else "-"
    print(f"CPU seconds per second: client {s['client_cpu_per_s']:.2f}, server {server}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Example: python benchmarks/serve.py --rate 4 --num-requests 64 "
                                        "--input-len 32 128 --output-len 32 128")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default: %(default)s)")
    ap.add_argument("--model", default=None, help="model name to send (default: the server's first, /v1/models)")
    load = ap.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=float("inf"),
                      help="Poisson arrivals, requests per second (default: inf, all at once)")
    load.add_argument("--concurrency", type=int, default=None, help="N clients, each one request at a time")
    ap.add_argument("--num-requests", type=int, default=64, help="(default: %(default)s)")
    ap.add_argument("--num-clients", type=int, default=1,
                    help="client processes sharing the requests (default: 1); one Python process parses "
                         "~10-15k stream chunks a second at most, so a fast server needs several")
    ap.add_argument("--input-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"),
                    help="prompt tokens, uniform in [MIN, MAX] (default: 100 1024)")
    ap.add_argument("--output-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"),
                    help="output tokens, uniform in [MIN, MAX] (default: 100 1024)")
    ap.add_argument("--token-id-range", type=int, nargs=2, default=[10, 500], metavar=("LO", "HI"),
                    help="prompt token ids are drawn from [LO, HI) (default: 10 500; fits every vocabulary)")
    ap.add_argument("--temperature", type=float, default=0.0, help="(default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the workload and the arrivals (default: 0)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, s (default: %(default)s)")
    ap.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                    help="skip each client process's unmeasured first request (see above)")
    ap.add_argument("--engine", default="aios", help="engine name recorded in the JSON (default: %(default)s)")
    ap.add_argument("--out", default=None, help="folder for the JSON result, e.g. benchmarks/results")
    ap.add_argument("--launch", default=None, metavar="CMD",
                    help="start this server command first (its --port must match --url), stop it after")
    ap.add_argument("--launch-timeout", type=float, default=600.0, help="seconds to wait for it (default: 600)")
    args = ap.parse_args(argv)
    for name in ("input_len", "output_len", "token_id_range"):
        lo, hi = getattr(args, name)
        if not 0 < lo <= hi:
            ap.error(f"--{name.replace('_', '-')} needs 0 < MIN <= MAX, got {lo} {hi}")
    if args.rate <= 0 or (args.concurrency is not None and args.concurrency < 1) or args.num_requests < 1 \
            or args.num_clients < 1:
        ap.error("--rate, --concurrency, --num-requests and --num-clients must be positive")
    if args.concurrency is not None and args.concurrency < args.num_clients:
        ap.error("--concurrency must be at least --num-clients")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    if args.launch:
        try:
            server = launch(args.launch, args.url, args.launch_timeout)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        return benchmark(args)
    finally:
        if server is not None:
            stop(server)


def benchmark(args: argparse.Namespace) -> int:
    try:
        served = served_model(args.url)
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
        print(f"error: cannot reach an OpenAI-compatible server at {args.url}: {e}", file=sys.stderr)
        return 2
    args.model = args.model or served
    workload = make_workload(args)
    print(f"{args.num_requests} requests to {args.url} ({args.model}), "
          + (f"concurrency {args.concurrency}" if args.concurrency else f"rate {args.rate} req/s"))
    summary = run_load(args, workload)
    print_report(summary)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        mode = f"c{args.concurrency}" if args.concurrency else f"rate{args.rate:g}"
        name = f"{datetime.date.today()}-serve-{args.engine}-{os.path.basename(args.model)}-{mode}.json"
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name)                 # an engine label may hold spaces
        path = os.path.join(args.out, name)
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {path}")
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
