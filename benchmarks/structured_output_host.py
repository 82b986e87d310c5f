"""Where the host time of a JSON-constrained decode step goes, apart from the model's forward
(issue 21): the bundled model on the CPU, 64 requests, each with its own random schema.

    PYTHONPATH=$PWD python benchmarks/structured_output_host.py [--batch 64] [--max-tokens 64]
        [--wide-vocab] [--cprofile] [--fill-only]

--fill-only times just the bitmask of 64 rows in random JSON grammar states, both ways in one run:
StructuredOutputGrammar.fill row by row (the engine's path) and one xgrammar
BatchGrammarMatcher.batch_fill_next_token_bitmask call (its threads), at 4,096, 40,000 and 151,936
logits, and the grammar's accept per token (xgrammar scans its special-token list, which holds
every id past the tokenizer's, on each accept).

--wide-vocab keeps the bundled tokenizer (the grammar is the same) but widens the logits to the
qwen3-0.6b shape's 151,936 tokens (a bitmask row of 4,748 words, as in the H200 run of
benchmarks/structured_output_cost.py --shape qwen3-0.6b --tokenizer aios/assets/aios-tiny-bible)
on a tiny random body (2 layers, hidden 128), so the forward stays small.

Every host-side function of the constrained path is wrapped in a timer (inclusive times: a row's
time holds the rows indented under it) and the run reports, per decode step and per constrained
row, the time in each. `step` is LLMEngine.step; `forward` is ModelRunner.execute_step, the model
(synchronous on the CPU); the sampler and apply_token_bitmask_ref (the mask kernel's reference) are
device work on a GPU too. step less those three is the host's share: on a GPU, the part that a step
with a constrained row cannot hide (aios/engine/structured_output_requests.py). The same requests run
again unconstrained (the constrained run's output lengths, ignore_eos), so the two can be set side
by side. Only steps after a warm-up request count. --cprofile adds cProfile's top functions of the
constrained run by own time. CPU numbers: the script runs on whatever CPU it is given.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import shutil
import tempfile
import time
from collections import defaultdict
from types import SimpleNamespace

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
    p.add_argument("--wide-vocab", action="store_true", help="151,936 logits (see the docstring)")
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--fill-only", action="store_true", help="time only the bitmask fill, both ways")
    args = p.parse_args()
    if args.fill_only:
        fill_only(args.batch)
        return
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
    model, tmp = None, None
    if args.wide_vocab:
        from aios.bench.shapes import write_shape
        tmp = tempfile.mkdtemp()
        model = write_shape("qwen3-0.6b", tmp, with_tokenizer=True, hidden_size=128, intermediate_size=256,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=64)
    steps, lengths, stats = run(totals, counts, model, prompts, constrained, bs, args.cprofile)
    results = {"constrained": (dict(totals), dict(counts), steps, sum(lengths))}
    free = [SamplingParams(temperature=0.6, seed=i, max_tokens=n, ignore_eos=True) for i, n in enumerate(lengths)]
    steps, _, _ = run(totals, counts, model, prompts, free, bs, False)
    results["free"] = (dict(totals), dict(counts), steps, sum(lengths))
    c, f = results["constrained"], results["free"]
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    what = "qwen3-0.6b vocabulary, tiny body" if args.wide_vocab else "bundled model"
    print(f"CPU, {what}, batch {bs}: constrained {c[2]} steps / {c[3]} tokens, free {f[2]} steps / {f[3]} tokens")
    print(f"{'function (inclusive)':34s} {'calls':>6s} {'ms/step':>9s} {'us/row':>8s} | {'free ms/step':>12s}")
    for label, _, _, _, depth in TIMED:
        if label not in c[0] and label not in f[0]:
            continue
        cm = c[0].get(label, 0.0) / c[2] * 1e3
        fm = f[0].get(label, 0.0) / f[2] * 1e3
        per_row = cm * 1e3 / (c[3] / c[2])
        print(f"{'  ' * depth + label:34s} {c[1].get(label, 0):6d} {cm:9.3f} {per_row:8.1f} | {fm:12.3f}")
    device_work = ("forward (model)", "sampler", "mask: apply_token_bitmask_ref")
    for name, r in [("constrained", c), ("free", f)]:
        host = (r[0]["step"] - sum(r[0].get(k, 0.0) for k in device_work)) / r[2] * 1e3
        print(f"host (step - forward - sampler - mask kernel), {name}: {host:.3f} ms/step, "
              f"{host * 1e3 / (r[3] / r[2]):.1f} us/row")
    if stats is not None:
        stats.sort_stats("tottime").print_stats(25)


def fill_only(batch: int) -> None:
    import numpy as np
    import torch
    import xgrammar as xgr
    from transformers import AutoTokenizer

    from aios.assets import default_model_path
    from aios.bench.json_schemas import random_schema
    from aios.sampling_params import StructuredOutputsParams
    from aios.structured_output import StructuredOutputGrammar, StructuredOutputManager
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    for vocab in (4096, 40000, 151936):
        manager = StructuredOutputManager(tokenizer, vocab, [tokenizer.eos_token_id], "cpu", use_triton=False)
        rng = np.random.default_rng(0)
        seqs, accept_s = [], []
        for i in range(batch):           # each grammar 1-30 random allowed tokens in
            g = StructuredOutputGrammar(manager.compiler.compile(StructuredOutputsParams(json=random_schema(i))))
            row = torch.zeros(1, manager.num_words, dtype=torch.int32)
            for _ in range(int(rng.integers(1, 30))):
                if g.is_terminated:
                    break
                g.fill(row, 0)
                bits = np.unpackbits(row.numpy().view(np.uint8), bitorder="little")[:vocab]
                token = int(rng.choice(np.flatnonzero(bits)))
                t0 = time.perf_counter()
                g.accept(token)
                accept_s.append(time.perf_counter() - t0)
            seqs.append(SimpleNamespace(grammar=g, is_finished=False))

        print(f"CPU, {vocab} logits: StructuredOutputGrammar.accept {np.median(accept_s) * 1e6:.1f} us a token "
              f"(median of {len(accept_s)}; xgrammar's special tokens: {vocab - len(tokenizer)} padding ids)")

        def row_by_row(num_words=manager.num_words, seqs=seqs):
            bitmask = torch.empty(batch, num_words, dtype=torch.int32)
            for j, seq in enumerate(seqs):
                seq.grammar.fill(bitmask, j)

        batch_matcher = xgr.BatchGrammarMatcher()
        batched_mask = torch.empty(batch, manager.num_words, dtype=torch.int32)

        live = [s.grammar.matcher for s in seqs if not s.grammar.is_terminated]
        print(f"CPU, {vocab} logits: {len(live)} of {batch} grammars not terminated")

        def batched(matcher=batch_matcher, live=live, mask=batched_mask):   # no guard (the engine's fill ANDs it)
            matcher.batch_fill_next_token_bitmask(live, mask)

        for name, fn in [("row by row (StructuredOutputGrammar.fill)", row_by_row),
                         ("batched (xgrammar BatchGrammarMatcher)", batched)]:
            fn()
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            print(f"CPU, {vocab} logits, {batch} rows: {name}: {np.median(times) * 1e3:.3f} ms (median of 50)")
        manager.close()


def run(totals: dict, counts: dict, model: str | None, prompts: list, params: list, batch: int,
        profile: bool) -> tuple[int, list[int], pstats.Stats | None]:
    """Step `params` to the end after a warm-up request; the timers count only those steps."""
    from aios import LLM
    engine = dict(load_format="dummy", dtype="float32") if model else {}
    with LLM(model, device="cpu", max_model_len=1024, max_num_seqs=batch, **engine) as llm:
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
