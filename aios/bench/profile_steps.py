"""Where a step's time goes: host work (schedule, prepare, postprocess) vs GPU work (model, sampler).

Wraps the engine's parts with synchronizing timers (the engine already waits once per step when it
reads the sampled tokens, so this moves little) and runs a torch.profiler window over a few steps
for the per-kernel table. Used by `benchmark.py --profile`.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

KINDS = ("decode", "mixed", "mixed_graphed")


def step_kind(runner, inputs, use_cuda_graph: bool = True) -> str:
    """decode: one token a sequence; mixed: a step holding prefill tokens, run eagerly; mixed_graphed:
    one that replays a mixed-step CUDA graph (ModelRunner.mixed_graph_size, execute_step's own test)."""
    if not inputs.is_prefill:
        return "decode"
    return "mixed" if runner.mixed_graph_size(inputs, use_cuda_graph) is None else "mixed_graphed"


def profile_engine(llm, prompts, params, max_steps: int = 400, trace_steps: int = 10) -> dict:
    sync = llm.config.device == "cuda"
    runner, sched = llm.model_runner, llm.scheduler
    parts = {"schedule": (sched, "schedule"), "postprocess": (sched, "postprocess"),
             "prepare": (runner, "prepare_inputs"), "execute": (runner, "execute_step"),
             "sample": (runner.sampler, "forward")}
    originals = {name: getattr(obj, attr) for name, (obj, attr) in parts.items()}
    step_times: dict[str, float] = defaultdict(float)
    state = {"kind": "decode"}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            if sync:
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            if sync:
                torch.cuda.synchronize()
            step_times[name] += time.perf_counter() - t
            if name == "execute":
                state["kind"] = step_kind(runner, *args, **kwargs)
            return out
        return wrapper

    acc = {kind: defaultdict(float) for kind in KINDS}
    counts = dict.fromkeys(KINDS, 0)
    for p, sp in zip(prompts, params):
        llm.add_request(p, sp)
    table, steps = "", 0
    try:
        for name, (obj, attr) in parts.items():
            setattr(obj, attr, timed(name, originals[name]))
        while llm.has_unfinished_requests() and steps < max_steps:
            step_times.clear()
            t = time.perf_counter()
            llm.step()
            step_times["total"] = time.perf_counter() - t
            kind = state["kind"]
            counts[kind] += 1
            for k, v in step_times.items():
                acc[kind][k] += v
            steps += 1
        for name, (obj, attr) in parts.items():
            setattr(obj, attr, originals[name])
        if sync and llm.has_unfinished_requests():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                    torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(trace_steps):
                    llm.step()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=70)
    finally:
        for name, (obj, attr) in parts.items():
            setattr(obj, attr, originals[name])
        for seq in list(llm.seqs.values()):
            llm.abort_request(seq.seq_id)
    out: dict = {"note": f"first {steps} steps of the workload, per-step means (ms), synchronized timers; "
                         "mixed: steps holding prefill tokens run eagerly, mixed_graphed: those replaying a graph",
                 "steps": steps}
    for kind in acc:
        if counts[kind]:
            m = {k: round(1000 * v / counts[kind], 3) for k, v in acc[kind].items()}
            m["host_ms"] = round(m["total"] - m.get("execute", 0) - m.get("sample", 0), 3)
            out[kind] = {"steps": counts[kind], **m}
    out["kernel_table"] = table
    return out
