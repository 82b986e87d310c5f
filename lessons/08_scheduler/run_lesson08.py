#!/usr/bin/env python
"""Lesson 08: the scheduler. Continuous batching, chunked prefill, preemption.

    static batches (lesson 07)      : a new request joins only when the whole batch has finished
    continuous batching (lesson 08) : every step refills the batch: a finished sequence's slot goes
                                      to the next waiting request at once (Scheduler.schedule)
    chunked prefill                 : a long prompt is split across steps under a token budget, so
                                      the decodes running beside it are not stalled
    preemption                      : when KV blocks run out, the newest sequence gives its blocks
                                      back and is recomputed later; its tokens do not change

Settings from aios/bench/ladder.py (lessons 07 and 08), with max_num_seqs lowered so that the
requests do not all fit in one batch.
"""

from __future__ import annotations

from lessons import common


def generate(llm, prompts, params) -> tuple[list[list[int]], list[dict], int, float]:
    """(tokens, outputs, engine steps that ran the model, seconds)."""
    steps = 0
    schedule = llm.scheduler.schedule

    def counting_schedule():
        nonlocal steps
        batch = schedule()
        steps += bool(batch.seqs)
        return batch

    llm.scheduler.schedule = counting_schedule
    try:
        with common.Timer(llm.config.device) as t:
            outs = llm.generate(prompts, params, use_tqdm=False)
    finally:
        del llm.scheduler.schedule
    return [o["token_ids"] for o in outs], outs, steps, t.seconds


def long_prompt_arrives(llm, prompts: list[str], long_len: int) -> tuple[int, float, float]:
    """Start the prompts decoding, then add one long_len-token prompt; run to the end.
    Returns (largest step in tokens, worst gap between two tokens of a short request, long TTFT)."""
    from aios import SamplingParams

    short = [llm.add_request(p, SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)) for p in prompts]
    for _ in range(4):
        llm.step()                                                      # the short ones are decoding now
    base = common.tokenize(llm, " ".join(common.PROMPTS))
    long_ids = (base * (long_len // len(base) + 1))[:long_len]
    long_seq = llm.add_request(long_ids, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    step_tokens = []
    schedule = llm.scheduler.schedule

    def spy():                                                          # record each step's size
        batch = schedule()
        step_tokens.append(batch.num_tokens)
        return batch

    llm.scheduler.schedule = spy
    while llm.has_unfinished_requests():
        llm.step()
    del llm.scheduler.schedule
    gaps = [b - a for s in short for a, b in zip(s.token_times, s.token_times[1:])]
    return max(step_tokens), max(gaps), long_seq.first_token_time - long_seq.arrival_time


def arrivals_over_time(llm, prompts: list, every: int) -> tuple[list[float], list[float]]:
    """Four requests at once, then one more every `every` steps; run to the end.
    Returns (each request's TTFT, every gap between two tokens of one request), in seconds."""
    from aios import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    seqs = [llm.add_request(p, params) for p in prompts[:4]]
    pending, step = list(prompts[4:]), 0
    while llm.has_unfinished_requests() or pending:
        if pending and step % every == 0:
            seqs.append(llm.add_request(pending.pop(0), params))
        llm.step()
        step += 1
    ttft = [s.first_token_time - s.arrival_time for s in seqs]
    gaps = [b - a for s in seqs for a, b in zip(s.token_times, s.token_times[1:])]
    return ttft, gaps


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--num-prompts", type=int, default=None, help="default 16; 6 with --quick")
    ap.add_argument("--max-num-seqs", type=int, default=4, help="sequences per step (default 4)")
    ap.add_argument("--mine", action="store_true",
                    help="the lesson 08 engines run on your Scheduler (workspace/lesson08.py)")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (6 if args.quick else 16)

    from aios import LLM, SamplingParams
    from aios.bench.ladder import OVERRIDES
    from aios.engine.scheduler import Scheduler

    print(common.describe(args))
    scheduler_cls = Scheduler
    if args.mine:
        from workspace import lesson08
        scheduler_cls = lesson08.Scheduler
        print("--mine: every lesson 08 engine below runs on YOUR Scheduler.schedule (workspace/lesson08.py)")
    prompts = common.prompts(args, n)
    lengths = ([4, 24, 8, 16, 12, 4] if args.quick else [8, 128, 16, 64, 32, 8, 96, 16]) * 4
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in lengths[:n]]
    total = sum(p.max_tokens for p in params)

    # ---- 1. static vs continuous batching --------------------------------------------------------
    results = {}
    for lesson, label in (("07", "static batches (lesson 07)"), ("08", "continuous batching (lesson 08)")):
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init,
                  scheduler_cls=scheduler_cls if lesson == "08" else Scheduler,
                  **{**OVERRIDES[lesson], "max_num_seqs": args.max_num_seqs})
        llm.generate(prompts[:1], SamplingParams(max_tokens=2), use_tqdm=False)          # warm-up
        results[lesson] = (label, *generate(llm, prompts, params))
        llm.close()
    common.heading(f"{n} requests, output lengths {sorted({p.max_tokens for p in params})}, "
                   f"max_num_seqs={args.max_num_seqs}")
    rows = []
    for lesson, (label, tokens, _, steps, seconds) in results.items():
        same = "-" if lesson == "07" else ("yes" if tokens == results["07"][1] else "NO")
        rows.append([label, steps, total / steps, seconds, total / seconds, same])
    print(common.table(["scheduler", "steps", "sequences per step", "seconds", "tok/s", "same tokens"], rows))

    # ---- 2. chunked prefill: a long prompt arrives while four requests decode -----------------------
    long_len = 256 if args.quick else 1536
    budget = 64 if args.quick else 256
    common.heading(f"a {long_len}-token prompt arrives while 4 requests decode")
    rows = []
    for label, overrides in (("whole prompt in one step (chunking off)",
                              dict(enable_chunked_prefill=False, max_num_batched_tokens=2048)),
                             (f"chunked prefill, {budget}-token budget",
                              dict(enable_chunked_prefill=True, max_num_batched_tokens=budget))):
        llm = LLM(args.model, device=args.device, max_model_len=2048, skip_tokenizer_init=args.skip_tokenizer_init,
                  scheduler_cls=scheduler_cls, **{**OVERRIDES["08"], **overrides})
        largest, worst_gap, ttft = long_prompt_arrives(llm, prompts[:4], long_len)
        rows.append([label, largest, 1000 * worst_gap, 1000 * ttft])
        llm.close()
    print(common.table(["prefill", "largest step (tokens)", "worst decode gap (ms)", "long prompt's TTFT (ms)"],
                       rows))

    # ---- 3. preemption: too few KV blocks for everyone ------------------------------------------------
    common.heading("preemption: 6 requests of 40 output tokens each, enough blocks vs a KV cache of 12")
    few = [SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)] * 6
    rows, outputs = [], []
    for label, blocks in (("enough blocks", None), ("12 blocks of 16 tokens", 12)):
        llm = LLM(args.model, device=args.device, num_kvcache_blocks=blocks, kvcache_block_size=16,
                  skip_tokenizer_init=args.skip_tokenizer_init, scheduler_cls=scheduler_cls, **OVERRIDES["08"])
        tokens, _, steps, seconds = generate(llm, prompts[:6], few)
        outputs.append(tokens)
        s = llm.stats()
        rows.append([label, llm.num_kvcache_blocks, s["num_preemptions"], steps,
                     "-" if blocks is None else ("yes" if tokens == outputs[0] else "NO")])
        llm.close()
    print(common.table(["KV cache", "blocks", "preemptions", "steps", "same tokens"], rows))

    # ---- 4. decode-first (aios) vs prefill-first: who waits ---------------------------------------------
    import numpy as np

    from lessons.common import load_module

    prefill_first = load_module("08_scheduler/prefill_first.py").prefill_first
    budget, every = (32, 2) if args.quick else (64, 3)
    reps = 2 if args.quick else 6
    texts = [(t + " ") * reps if isinstance(t, str) else t * reps
             for t in common.prompts(args, 8 if args.quick else 16)]
    common.heading(f"decode-first vs prefill-first: {len(texts)} requests of 32 output tokens, 4 at once then "
                   f"one every {every} steps, {budget}-token budget")
    rows = []
    for label, cls in (("decode-first (aios: decodes, then chunks)", scheduler_cls),
                       ("prefill-first (prefill_first.py)", prefill_first(scheduler_cls))):
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init, scheduler_cls=cls,
                  **{**OVERRIDES["08"], "max_num_batched_tokens": budget, "max_num_seqs": 8})
        llm.generate(prompts[:1], SamplingParams(max_tokens=2), use_tqdm=False)          # warm-up
        ttft, gaps = arrivals_over_time(llm, texts, every)
        rows.append([label, 1000 * np.median(ttft), 1000 * np.percentile(ttft, 90), 1000 * np.median(gaps),
                     1000 * np.percentile(gaps, 99), 1000 * max(gaps)])
        llm.close()
    print(common.table(["policy", "TTFT p50 (ms)", "TTFT p90 (ms)", "ITL p50 (ms)", "ITL p99 (ms)", "ITL max (ms)"],
                       rows))


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        while isinstance(e.__context__, NotImplementedError):   # the first stub hit, not a later one
            e = e.__context__
        raise SystemExit(f"{e}\nwrite it in workspace/lesson08.py; check it with: python lessons/check.py 08") from None
