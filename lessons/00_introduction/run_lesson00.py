#!/usr/bin/env python
"""Lesson 00: why an inference engine? The same model, the same tokens, served two ways.

    one at a time : each request runs alone, start to finish (what a naive `model.generate` loop does)
    batched       : aios's defaults: every request shares each step (continuous batching)

The greedy tokens are identical; only the throughput changes. That gap is what the course builds.
"""

from __future__ import annotations

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--num-prompts", type=int, default=None, help="requests (default 16; 4 with --quick)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per request (default 64; 16 with --quick)")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (4 if args.quick else 16)
    max_tokens = args.max_tokens or (16 if args.quick else 64)

    from aios import LLM, SamplingParams

    print(common.describe(args))
    if args.quick:
        print("--quick: a smoke test (few, short requests); its times say nothing about speed: run without it")
    prompts = common.prompts(args, n)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init)
    llm.generate(prompts[:1], SamplingParams(max_tokens=4), use_tqdm=False)        # warm-up

    with common.Timer(args.device) as t_one:
        one = [llm.generate([p], params, use_tqdm=False)[0] for p in prompts]
    with common.Timer(args.device) as t_all:
        batched = llm.generate(prompts, params, use_tqdm=False)

    tokens = sum(len(o["token_ids"]) for o in batched)
    same = all(a["token_ids"] == b["token_ids"] for a, b in zip(one, batched))
    common.heading(f"{n} requests x {max_tokens} tokens, greedy")
    print(common.table(["mode", "requests", "output tokens", "seconds", "tok/s"], [
        ["one at a time", n, tokens, t_one.seconds, tokens / t_one.seconds],
        ["batched", n, tokens, t_all.seconds, tokens / t_all.seconds],
    ]))
    print(f"speed-up: {t_one.seconds / t_all.seconds:.1f}x   same tokens: {'yes' if same else 'NO'}")
    print(f"forward passes: {n * max_tokens:,} one at a time ({n} x {max_tokens}), {max_tokens} batched; "
          f"each pass reads every weight once")

    common.heading("what the engine did (llm.stats())")
    s = llm.stats()
    cfg = llm.config
    print(f"KV cache (virtual memory): {s['kv_blocks_total']:,} blocks of {cfg.kvcache_block_size} tokens, "
          f"{s['kv_blocks_used']} in use now (all freed)")
    print(f"scheduler (process scheduling): up to {cfg.max_num_seqs} sequences and "
          f"{cfg.max_num_batched_tokens} tokens per step; {s['num_preemptions']} preemptions")
    print(f"tokens generated since start: {s['num_generated_tokens']:,}")

    common.heading("one completion")
    print(common.completion(args, prompts[0], batched[0]))


if __name__ == "__main__":
    main()
