"""`benchmark.py --suite` and `--scaling`: every workload on one start of each engine, in one budget.

    plan (workloads, max_model_len, estimate) -> for each engine: its own process
    (aios/bench/engine_runner.py), one start, every workload -> rows -> table + JSON + PNG (report.py)

Each engine runs in a process of its own, one after the other (AIOS first), so their GPU memory
never overlaps and a crash costs one engine's rows. The budget (`max_seconds`) is shared out
before each engine starts, in proportion to the estimated cost of the engines still to run
(aios/bench/estimate.py: start-up + workloads), so the first engine cannot eat the second's time.
An engine's process stops itself before a workload that will not fit its share; if a workload
overruns anyway, the process is killed at its share's end plus `GRACE_S`, and the rows it already
printed are kept. Either way the results are written.

The scaling curves are suites too: `concurrency` is concurrency-N for N = 1, 2, 4, ... 1024 (in 128 /
out 256), `prompt-len` is prompt-len-L (prefill, cold) and prompt-len-L-decode (out 64, warm) for
L = 1k ... 32k (capped to fit the shape's max_position_embeddings).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import aios
from aios.bench import estimate, workloads
from aios.bench.engine_runner import PREFIX

GRACE_S = 20.0                                                  # past its share before an engine is killed
EXIT_S = 30.0                                                   # to exit after its last row
CONCURRENCY = tuple(2 ** i for i in range(11))                 # 1 ... 1024 sequences
PROMPT_LENS = tuple(1024 * 2 ** i for i in range(6))           # 1k ... 32k tokens
PROMPT_LEN_OUTPUT = 64                                          # the decode half of a prompt-len point


def scaling_workloads(kind: str, max_position_embeddings: int, points: list[int] | None = None) -> list[str]:
    """The workloads of one curve: its default points (CONCURRENCY, PROMPT_LENS) or the ones given."""
    if kind == "concurrency":
        return [f"concurrency-{n}" for n in points or CONCURRENCY]
    if kind == "prompt-len":
        names: list[str] = []
        for length in points or PROMPT_LENS:
            length = min(length, max_position_embeddings - PROMPT_LEN_OUTPUT)
            if f"prompt-len-{length}" not in names:
                names += [f"prompt-len-{length}", f"prompt-len-{length}-decode"]
        return names
    raise ValueError(f"--scaling is concurrency or prompt-len, got {kind!r}")


def plan(names: list[str], config: dict, options: dict) -> tuple[list[str], dict[str, str], int]:
    """(names that fit the shape, {name: why not} for the rest, the max_model_len they all need)."""
    kw = workloads.options_kwargs(options)
    limit = config.get("max_position_embeddings", 1 << 30)
    fits, refused, need = [], {}, 64                         # at least the warm-up's 16 + 4 tokens
    for name in names:
        wl = workloads.by_name(name, **kw)
        if wl.max_seq_len > limit:
            refused[name] = f"needs {wl.max_seq_len} tokens a sequence; the shape's max_position_embeddings is {limit}"
            continue
        fits.append(name)
        need = max(need, wl.max_seq_len)
    return fits, refused, need


def estimate_s(engine: str, names: list[str], config: dict, options: dict) -> float:
    """Estimated seconds of one engine's process (H200; aios/bench/estimate.py): start-up + workloads."""
    kw = workloads.options_kwargs(options)
    total, last = estimate.STARTUP_S.get(engine, 60.0), None
    for name in names:
        wl = workloads.by_name(name, **kw)
        total += estimate.workload_s(wl, config)
        if wl.after and wl.after != last:
            total += estimate.workload_s(workloads.by_name(wl.after, **kw), config)
        last = name
    return total


def _pump(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)    # the engine's own workers too (vLLM's engine core)
    except ProcessLookupError:
        pass


def collect(cmd: list[str], deadline: float, log_path: str, cwd: str | None = None,
            env: dict | None = None) -> tuple[list[dict], str | None]:
    """Run one engine's process; return the rows it printed and why it ended early (None if it did not).
    Killed (its process group) at the deadline, or EXIT_S after it said it was done (an engine's
    worker can hold stdout open after its parent is gone); its stderr and other output go to log_path."""
    rows: list[dict] = []
    ended, done = None, False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=cwd, env=env,
                                start_new_session=True)
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, q), daemon=True).start()
        while True:
            try:
                line = q.get(timeout=min(max(deadline - time.time(), 0.0), 60.0))
            except queue.Empty:
                if time.time() < deadline:
                    continue
                _kill(proc)
                ended = f"killed at the budget ({time.strftime('%H:%M:%S')})"
                break
            if line is None:
                break
            if not line.startswith(PREFIX):
                log.write(line)                 # vLLM logs to stdout
                continue
            row = json.loads(line[len(PREFIX):])
            if row.get("done"):
                done = True
                break
            rows.append(row)
        try:
            proc.wait(timeout=EXIT_S if done else None)
        except subprocess.TimeoutExpired:
            pass
        _kill(proc)
        proc.wait()
    if ended is None and not done and proc.returncode != 0:
        with open(log_path) as f:
            ended = f"exit code {proc.returncode}: {f.read()[-1500:]}"
    return rows, ended


def run_engine(engine: str, model_dir: str, names: list[str], options: dict, deadline: float,
               log_path: str) -> dict:
    """One engine's process over every workload: {"info": ..., "rows": {name: row}}."""
    cmd = [sys.executable, "-m", "aios.bench.engine_runner", "--engine", engine, "--model", model_dir,
           "--workloads", *names, "--options", json.dumps(options), "--deadline", str(deadline)]
    env = dict(os.environ, NCCL_NVLS_ENABLE="0")
    # from the directory that holds this aios package: `-m` then imports the same aios as this process
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(aios.__file__)))
    t = time.time()
    lines, ended = collect(cmd, deadline + GRACE_S, log_path, cwd=cwd, env=env)
    info: dict = {"wall_s": None}
    rows: dict[str, dict] = {}
    for r in lines:
        if r.get("info"):
            info.update({k: v for k, v in r.items() if k not in ("info", "engine")})
        else:
            rows[r["workload"]] = r
    info["wall_s"] = round(time.time() - t, 1)
    for name in names:
        if name not in rows:
            rows[name] = {"engine": engine, "workload": name, "skipped": f"not run: {ended or 'engine stopped'}"[:1500]}
    if ended:
        info["ended"] = ended[:1500]
    return {"info": info, "rows": rows}


def run(engines: list[str], model_dir: str, names: list[str], options: dict, max_seconds: float | None,
        log_prefix: str, peer_options: dict[str, dict] | None = None) -> dict:
    """Every engine over every workload in names, within max_seconds; the suite's result (report.py's input).
    peer_options: options for one engine only (the hf peer's request limit)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    fits, refused, need = plan(names, config, options)
    options = {**options, "max_model_len": options.get("max_model_len") or need}
    if "engine_kwargs" in options:
        options["engine_kwargs"] = {**options["engine_kwargs"], "max_model_len": options["max_model_len"]}
    costs = {e: estimate_s(e, fits, config, options) for e in engines}
    print(f"# suite: {len(fits)} workloads x {len(engines)} engines, max_model_len {options['max_model_len']}; "
          "expected on an H200: " + ", ".join(f"{e} ~{c:.0f} s" for e, c in costs.items())
          + f", ~{sum(costs.values()):.0f} s in all (start-ups are allowances: aios/bench/estimate.py)"
          + (f"; budget {max_seconds:.0f} s" if max_seconds else ""), flush=True)
    kw = workloads.options_kwargs(options)
    print("# each workload, timed part + its probe (H200 estimate): " + ", ".join(
        f"{n} {estimate.workload_s(workloads.by_name(n, **kw), config):.0f} s" for n in fits), flush=True)
    for name, why in refused.items():
        print(f"# {name}: not run ({why})", flush=True)
    start = time.time()
    end = start + max_seconds if max_seconds else float("inf")
    result: dict = {"workloads": fits, "engines": {}, "max_model_len": options["max_model_len"],
                    "estimated_s": {e: round(c, 1) for e, c in costs.items()}}
    for i, engine in enumerate(engines):
        left = end - time.time()
        rest = sum(costs[e] for e in engines[i:])
        deadline = time.time() + left * costs[engine] / rest if left != float("inf") else 1e12
        share, startup = deadline - time.time(), estimate.STARTUP_S.get(engine, 60.0)
        if share < 0.5 * startup:              # not worth starting: it would be killed before its first row
            why = f"budget: {max(share, 0):.0f} s left, its start-up alone takes ~{startup:.0f} s"
            print(f"# {engine}: not started ({why})", flush=True)
            rows = {n: {"engine": engine, "workload": n, "skipped": why} for n in fits}
            result["engines"][engine] = {"info": {"ended": why}, "rows": rows}
            continue
        print(f"# {engine}: starting, {'no budget' if deadline >= 1e12 else f'{share:.0f} s'}", flush=True)
        out = run_engine(engine, model_dir, fits, {**options, **(peer_options or {}).get(engine, {})}, deadline,
                         f"{log_prefix}-{engine}.log")
        for name in refused:
            out["rows"][name] = {"engine": engine, "workload": name, "skipped": refused[name]}
        result["engines"][engine] = out
        for name in fits:
            print("  " + one_line(out["rows"][name]), flush=True)
    result["workloads"] = fits + list(refused)
    result["wall_s"] = round(time.time() - start, 1)
    return result


def one_line(row: dict) -> str:
    if "output_tok_per_s" not in row:
        return f"{row['engine']} {row['workload']}: {row.get('skipped') or row.get('error')}"[:300]
    s = f"{row['engine']} {row['workload']}: {row['output_tok_per_s']:,.1f} out tok/s in {row['elapsed_s']:.2f} s"
    if "prompt_tok_per_s" in row:
        s += f", {row['prompt_tok_per_s']:,.0f} prompt tok/s"
    return s
