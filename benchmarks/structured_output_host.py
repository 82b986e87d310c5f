"""Where the host time of a JSON-constrained decode step goes, apart from the model's forward
(issue 21): the bundled model on the CPU, 64 requests, each with its own random schema.

    PYTHONPATH=$PWD python benchmarks/structured_output_host.py [--batch 64] [--max-tokens 64] [--cprofile]

Every host-side function of the constrained path is wrapped in a timer (inclusive times: a row's
time holds the rows indented under it) and the run reports, per decode step and per constrained
row, the time in each. `step` is LLMEngine.step; `forward` is ModelRunner.execute_step, the model
(synchronous on the CPU); step - forward is the host's share, the part that a GPU step with a
constrained row cannot hide (aios/engine/structured_output_requests.py). The same requests run
again unconstrained (the constrained run's output lengths, ignore_eos), so the two can be set side
by side. Only steps after a warm-up request count. --cprofile adds cProfile's top functions of the
constrained run by own time. CPU numbers: the script runs on whatever CPU it is given.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import time
from collections import defaultdict

# (label, module, owner, attribute, depth): owner None patches a module-level function
TIMED = [
    ("step", "aios.engine.llm_engine", "LLMEngine", "step", 0),
    ("schedule", "aios.engine.scheduler", "Scheduler", "schedule", 1),
    ("forward (model)", "aios.engine.model_runner", "ModelRunner", "execute_step", 1),
    ("prepare_inputs", "aios.engine.model_runner", "ModelRunner", "prepare_inputs", 1),
    ("sampling_tensors", "aios.engine.model_runner", None, "sampling_tensors", 1),
    ("logits_processor_tensors", "aios.engine.model_runner", None, "logits_processor_tensors", 1),
    ("launched", "aios.engine.scheduler", "Scheduler", "launched", 1),
    ("postprocess", "aios.engine.scheduler", "Scheduler", "postprocess", 1),
    ("grammar accept", "aios.structured_output.manager", "StructuredOutputGrammar", "accept", 2),
    ("stop check", "aios.engine.stop_checker", "StopChecker", "check", 2),
    ("mask: apply", "aios.structured_output.manager", "StructuredOutputManager", "apply", 1),
    ("mask: fill_bitmask", "aios.structured_output.manager", "StructuredOutputManager", "fill_bitmask", 2),
    ("mask: apply_token_bitmask_ref", "aios.structured_output.manager", None, "apply_token_bitmask_ref", 2),
    ("sampler", "aios.layers.sampler", "Sampler", "forward", 1),
]


def install_timers(totals: dict, counts: dict) -> None:
    """Wrap each TIMED function (where this checkout has it) so that its calls add to totals."""
    for label, module_name, owner, attr, _ in TIMED:
        module = importlib.import_module(module_name)
        target = getattr(module, owner) if owner else module
        fn = getattr(target, attr, None)
        if fn is None:
            continue

        def timed(*args, _fn=fn, _label=label, **kwargs):
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - t0
                counts[_label] += 1

        setattr(target, attr, timed)


def main() -> None:
    from aios.bench.json_schemas import random_schema
    from aios.sampling_params import SamplingParams, StructuredOutputsParams

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--cprofile", action="store_true")
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)            # the forward's threads would blur the host's times

    totals: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    install_timers(totals, counts)
    bs = args.batch
    prompts = [f"Write the record as JSON. The lord said unto Moses, {i}" for i in range(bs)]
    constrained = [SamplingParams(temperature=0.6, seed=i, max_tokens=args.max_tokens,
                                  structured_outputs=StructuredOutputsParams(json=random_schema(i)))
                   for i in range(bs)]
    results = {}
    lengths, stats = None, None
    for name, params in [("constrained", constrained), (None, None)]:
        if name is None:
            params = [SamplingParams(temperature=0.6, seed=i, max_tokens=n, ignore_eos=True)
                      for i, n in enumerate(lengths)]
            name = "free"
        steps, lens, stats_ = run(totals, counts, prompts, params, bs, args.cprofile and name == "constrained")
        results[name] = (dict(totals), dict(counts), steps, sum(lens))
        if name == "constrained":
            lengths, stats = lens, stats_

    c, f = results["constrained"], results["free"]
    print(f"CPU, bundled model, batch {bs}: constrained {c[2]} steps / {c[3]} tokens, free {f[2]} steps / {f[3]} tokens")
    print(f"{'function (inclusive)':34s} {'calls':>6s} {'ms/step':>9s} {'us/row':>8s} | {'free ms/step':>12s}")
    for label, _, _, _, depth in TIMED:
        if label not in c[0] and label not in f[0]:
            continue
        cm = c[0].get(label, 0.0) / c[2] * 1e3
        fm = f[0].get(label, 0.0) / f[2] * 1e3
        print(f"{'  ' * depth + label:34s} {c[1].get(label, 0):6d} {cm:9.3f} {cm * 1e3 / (c[3] / c[2]):8.1f} | {fm:12.3f}")
    for name, r in [("constrained", c), ("free", f)]:
        host = (r[0]["step"] - r[0]["forward (model)"]) / r[2] * 1e3
        print(f"host (step - forward), {name}: {host:.3f} ms/step, {host * 1e3 / (r[3] / r[2]):.1f} us/row")
    if stats is not None:
        stats.sort_stats("tottime").print_stats(25)


def run(totals: dict, counts: dict, prompts: list, params: list, batch: int,
        profile: bool) -> tuple[int, list[int], pstats.Stats | None]:
    """Step `params` to the end after a warm-up request; the timers count only those steps."""
    from aios import LLM
    with LLM(device="cpu", max_model_len=1024, max_num_seqs=batch) as llm:
        llm.generate(prompts[:1], params[:1], use_tqdm=False)         # warm: the grammar tables
        seqs = [llm.add_request(p, sp) for p, sp in zip(prompts, params)]
        totals.clear(), counts.clear()
        profiler = cProfile.Profile() if profile else None
        steps = 0
        if profiler:
            profiler.enable()
        while llm.has_unfinished_requests():
            llm.step()
            steps += 1
        if profiler:
            profiler.disable()
        lengths = [len(llm.output(s)["token_ids"]) for s in seqs]
    return steps, lengths, pstats.Stats(profiler) if profiler else None


if __name__ == "__main__":
    main()
