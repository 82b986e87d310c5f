"""What logprobs and logits processors (penalties, logit_bias, min_tokens, bad_words) cost per step.

    python benchmarks/logits_processing.py [--device cpu|cuda] [--quick] [--out benchmarks/results]

1. host: what the host adds to one step when its rows ask (building the per-step arrays, reading
   the scores back), at batch 1 / 64 / 256, sequences of 256 prompt + 256 output tokens;
2. ops: the device work on [rows, 151,936] logits (Qwen3's vocabulary) on --device: the
   processors' torch ops (apply_logits_processors) and the scores (compute_logprobs, top-20);
3. engine: the time per step of the bundled model on --device, 32 requests x 32 tokens, with
   nothing asked and with each feature (the cases interleaved, each one's best of 5 rounds).
Every number is a median over repeats, on the device named in the output (the host's numbers are
the host's CPU whatever --device is). Writes <date>-<device>-logits-processing.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from aios.engine.scheduler import ScheduledBatch
from aios.engine.sequence import PLACEHOLDER, Sequence
from aios.layers.logits_processors import LogitsProcessing, apply_logits_processors, logits_processor_tensors
from aios.layers.logprobs import LogprobsTensors, compute_logprobs, prompt_logprob_rows, sample_logprob_rows
from aios.sampling_params import SamplingParams

VOCAB = 151_936
PROMPT_LEN = OUTPUT_LEN = 256


def median_ms(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def fake_rows(rows: int, params: SamplingParams, seed: int = 0) -> tuple[list[Sequence], dict[int, int]]:
    """Sequences of PROMPT_LEN + OUTPUT_LEN tokens whose newest token is in flight (async scheduling)."""
    g = np.random.default_rng(seed)
    stop_ids = (2, 3) if params.min_tokens else ()
    bad = ((11, 12), (13,), (14, 15)) if params.bad_words else ()
    proc = LogitsProcessing(params.presence_penalty, params.frequency_penalty, params.repetition_penalty,
                            tuple((params.logit_bias or {}).items()), params.min_tokens, stop_ids, bad)
    seqs = []
    for i in range(rows):
        prompt = g.integers(0, VOCAB, PROMPT_LEN).tolist()
        seq = Sequence(i, prompt, params, 256, dataclasses.replace(proc, prompt_token_ids=np.asarray(prompt)))
        seq.token_ids += g.integers(0, VOCAB, OUTPUT_LEN - 1).tolist() + [PLACEHOLDER]
        seqs.append(seq)
    return seqs, {s.seq_id: i for i, s in enumerate(seqs)}


FEATURES = {
    "penalties (repetition + frequency)": SamplingParams(repetition_penalty=1.1, frequency_penalty=0.5),
    "logit_bias (16 ids) + min_tokens + bad_words (3)": SamplingParams(
        logit_bias={i: 1.0 for i in range(16)}, min_tokens=OUTPUT_LEN + 8, max_tokens=OUTPUT_LEN + 8, bad_words=["x"]),
}


def host_costs(batch_sizes: list[int], repeats: int) -> list[dict]:
    out = []
    to_device = torch.from_numpy
    batch = ScheduledBatch()                 # nothing asked: what every step pays for the features
    for i in range(1024):
        seq = Sequence(i, list(range(PROMPT_LEN)), SamplingParams(), 256)
        seq.num_computed_tokens = PROMPT_LEN - 1
        batch.add(seq, 1)
    seqs = batch.sampled_seqs

    def scans() -> None:
        logits_processor_tensors(seqs, {}, to_device)
        prompt_logprob_rows(batch)
        sample_logprob_rows(seqs)
    out.append({"what": "nothing asked: the three scans of a decode batch", "rows": 1024,
                "ms": median_ms(scans, repeats * 10, "cpu")})
    for name, params in FEATURES.items():
        for rows in batch_sizes:
            seqs, row_of = fake_rows(rows, params)
            ms = median_ms(lambda s=seqs, r=row_of: logits_processor_tensors(s, r, to_device), repeats, "cpu")
            out.append({"what": f"build arrays: {name}", "rows": rows, "ms": ms})
    for rows in batch_sizes:
        t = LogprobsTensors(torch.zeros(rows, 21, dtype=torch.int64), torch.zeros(rows, 21),
                            torch.ones(rows, dtype=torch.int64))

        def read(t=t, rows=rows):
            lists = t.tolist()
            return [lists.entry(r, 20) for r in range(rows)]
        ms = median_ms(read, repeats, "cpu")
        out.append({"what": "read logprobs=20 back (tolist + entries)", "rows": rows, "ms": ms})
    return out


def op_costs(batch_sizes: list[int], repeats: int, device: str) -> list[dict]:
    out = []
    for rows in batch_sizes:
        logits = torch.randn(rows, VOCAB, device=device)
        tokens = torch.randint(0, VOCAB, (rows,), device=device)
        last = torch.randint(0, VOCAB, (rows,), device=device)
        to_device = lambda a: torch.from_numpy(a).to(device)          # noqa: E731
        for name, params in FEATURES.items():
            seqs, row_of = fake_rows(rows, params)
            t = logits_processor_tensors(seqs, row_of, to_device)
            ms = median_ms(lambda x=logits, t=t, last=last: apply_logits_processors(x, t, last), repeats, device)
            out.append({"what": f"apply: {name}", "rows": rows, "ms": ms})
        ms = median_ms(lambda x=logits, k=tokens: compute_logprobs(x, k, 20), repeats, device)
        out.append({"what": "compute_logprobs (log_softmax, rank, top-20)", "rows": rows, "ms": ms})
        ms = median_ms(lambda x=logits: x.argmax(dim=-1), repeats, device)
        out.append({"what": "for scale: greedy argmax", "rows": rows, "ms": ms})
    return out


ENGINE_CASES = {
    "nothing asked": {},
    "logprobs=5": dict(logprobs=5),
    "prompt_logprobs=5": dict(prompt_logprobs=5),
    "repetition + frequency penalties": dict(repetition_penalty=1.1, frequency_penalty=0.5),
    "logit_bias + min_tokens + bad_words": dict(logit_bias={i: 1.0 for i in range(16)}, min_tokens=16,
                                                bad_words=["the", "and"]),
}


def engine_costs(device: str, num_requests: int, max_tokens: int, rounds: int) -> list[dict]:
    from aios import LLM
    from aios.assets import default_model_path

    llm = LLM(default_model_path(), device=device)
    prompts = ["And the king said unto", "In the beginning", "The LORD is my shepherd", "And it came to pass"]
    prompts = [prompts[i % len(prompts)] + " " * (i // len(prompts)) for i in range(num_requests)]
    best = {name: float("inf") for name in ENGINE_CASES}
    llm.generate(prompts[:2], SamplingParams(max_tokens=4), use_tqdm=False)      # warm
    for _ in range(rounds):              # the cases interleaved, each one's best round: a loaded host's noise
        for name, kw in ENGINE_CASES.items():
            params = SamplingParams(temperature=0.8, seed=1, max_tokens=max_tokens, ignore_eos=True, **kw)
            for p in prompts:
                llm.add_request(p, params)
            steps, start = 0, time.perf_counter()
            while llm.has_unfinished_requests():
                llm.step()
                steps += 1
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3 / steps)
    llm.close()
    return [{"what": name, "requests": num_requests, "ms_per_step": ms} for name, ms in best.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="batches 1 and 64 only, fewer repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    batch_sizes = [1, 64] if args.quick else [1, 64, 256]
    repeats = 3 if args.quick else 7
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"CPU ({platform.machine()}, {torch.get_num_threads()} thread)")
    print(f"host: CPU ({platform.machine()}); ops and engine: {device_name}; torch {torch.__version__}")
    result = {"device": device_name, "torch": torch.__version__, "vocab": VOCAB,
              "host": host_costs(batch_sizes, repeats), "ops": op_costs(batch_sizes, repeats, args.device),
              "engine": engine_costs(args.device, 32, 32, 2 if args.quick else 5)}
    print("\n== host side of one step (CPU) ==")
    for r in result["host"]:
        print(f"{r['what']:<62} rows {r['rows']:>4}: {r['ms']:8.3f} ms")
    print(f"\n== device ops on [rows, {VOCAB:,}] fp32 logits ({device_name}) ==")
    for r in result["ops"]:
        print(f"{r['what']:<62} rows {r['rows']:>4}: {r['ms']:8.3f} ms")
    print(f"\n== the bundled model, 32 requests x 32 tokens, time per step ({device_name}) ==")
    for r in result["engine"]:
        print(f"{r['what']:<62} {r['ms_per_step']:8.3f} ms")
    os.makedirs(args.out, exist_ok=True)
    tag = "cpu" if args.device == "cpu" else device_name.lower().replace(" ", "-")
    path = os.path.join(args.out, f"{datetime.date.today()}-{tag}-logits-processing.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
