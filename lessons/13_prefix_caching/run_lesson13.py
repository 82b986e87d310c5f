#!/usr/bin/env python
"""Lesson 13: prefix caching. Requests that share a prefix share its KV blocks, computed once.

    off (lesson 11) : enable_prefix_caching=False: every request prefills its whole prompt
    on  (lesson 13) : enable_prefix_caching=True: each full KV block is registered under a chain
                      hash of its tokens and all the tokens before it (BlockManager.register_computed_blocks);
                      a new request walks its prompt block by block and reuses every block whose
                      hash is cached (BlockManager.match_prefix), computing only the rest

The workload: one long shared system prompt, then a short question per request. The first request
runs alone (it fills the cache), the others follow together. Settings from aios/bench/ladder.py.

Then parallel sampling, the other way blocks are shared: n samples of one prompt, first as n
requests of one sample each (admitted in one step: the first prefills the prompt, the others hit
its full blocks, cached as its chunk was scheduled, and compute the last, partly filled block),
then as one request with n (one prefill; the samples fork from it, share all its blocks by
reference count and copy the last, partly filled one before writing into it).

    --mine : the lesson 13 engine runs on YOUR BlockManager (workspace/lesson13.py: hash_block,
             match_prefix, register_computed_blocks, free, _take_free_block)
"""

from __future__ import annotations

from lessons import common


def abbreviate(xs: list[int]) -> str:
    return str(xs) if len(xs) <= 8 else f"[{', '.join(map(str, xs[:4]))}, ..., {', '.join(map(str, xs[-3:]))}]"


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--prefix-tokens", type=int, default=None,
                    help="shared prefix length (default 1024; two KV blocks with --quick)")
    ap.add_argument("--num-prompts", type=int, default=None, help="requests (default 16; 4 with --quick)")
    ap.add_argument("--n", type=int, default=None, help="samples of one prompt in the parallel-sampling part "
                                                         "(default 8; 4 with --quick)")
    ap.add_argument("--mine", action="store_true", help="run the lesson 13 engine on your BlockManager "
                                                         "(workspace/lesson13.py)")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (4 if args.quick else 16)
    max_tokens = 8 if args.quick else 32

    from aios import LLM, Config, SamplingParams
    from aios.bench.ladder import OVERRIDES

    block_size = Config.__dataclass_fields__["kvcache_block_size"].default   # only full blocks are cached
    prefix_len = args.prefix_tokens or (2 * block_size if args.quick else 1024)

    mine = {}
    if args.mine:
        from workspace.lesson13 import BlockManager
        mine = {"block_manager_cls": BlockManager}
        print("--mine: the lesson 13 engine below runs on YOUR BlockManager (workspace/lesson13.py)")
    print(common.describe(args))
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    results = {}
    for lesson in ("11", "13"):
        llm = LLM(args.model, device=args.device, max_model_len=2048, skip_tokenizer_init=args.skip_tokenizer_init,
                  **OVERRIDES[lesson], **(mine if lesson == "13" else {}))
        text = " ".join(common.PROMPTS) + "."
        base = common.tokenize(llm, text)                   # llm.tokenize(text), or token ids without a tokenizer
        system = (base * (prefix_len // len(base) + 1))[:prefix_len]
        prompts = [system + common.tokenize(llm, " " + q) for q in common.PROMPTS[:n]]
        warm = system[:2 * block_size] + prompts[0][-3:]           # warm-up: a miss, then a prefix hit
        llm.generate([warm, warm], SamplingParams(max_tokens=2), use_tqdm=False)
        llm.block_manager.reset_prefix_cache()
        before = llm.stats()
        with common.Timer(args.device) as t:                        # the same two calls for both engines
            first = llm.generate(prompts[:1], params, use_tqdm=False)                     # fills the cache
            rest = llm.generate(prompts[1:], params, use_tqdm=False)
        s = llm.stats()
        if lesson == "13":                                           # look inside, after the timing
            a, b = (llm.add_request(p, params) for p in prompts[1:3])
            llm.step()
            shared = [x for x, y in zip(a.block_table, b.block_table) if x == y]
            inside = (list(a.block_table), list(b.block_table), a.num_cached_tokens, len(shared),
                      llm.block_manager.blocks[shared[0]].ref_count if shared else 0)
            while not (a.is_finished and b.is_finished):
                llm.step()
        outs = first + rest
        prompt_tokens = sum(map(len, prompts))
        hits = s["prefix_cache_hits"] - before["prefix_cache_hits"]
        queries = s["prefix_cache_queries"] - before["prefix_cache_queries"]
        ttft = [o["metrics"]["ttft_s"] for o in outs[1:]]
        results[lesson] = dict(label=f"enable_prefix_caching={llm.config.enable_prefix_caching} (lesson {lesson})",
                               tokens=[o["token_ids"] for o in outs], prompt_tokens=prompt_tokens,
                               computed=prompt_tokens - hits, hit_rate=hits / queries if queries else 0.0,
                               seconds=t.seconds, ttft_ms=1000 * sum(ttft) / len(ttft))
        if lesson == "13":
            forks = parallel_sampling(args, llm, prompts[0], args.n or (4 if args.quick else 8), max_tokens)
        llm.close()

    common.heading(f"{n} requests: a {prefix_len}-token shared prefix + a short question each, "
                   f"{max_tokens} tokens out")
    rows = []
    for lesson, r in results.items():
        same = "-" if lesson == "11" else ("yes" if r["tokens"] == results["11"]["tokens"] else "NO")
        rows.append([r["label"], r["prompt_tokens"], r["computed"], f"{100 * r['hit_rate']:.0f}%", r["ttft_ms"],
                     r["seconds"], same])
    print(common.table(["engine", "prompt tokens", "prefill tokens computed", "hit rate", "mean TTFT ms (2..n)",
                        "seconds", "same tokens"], rows))
    table_a, table_b, cached, num_shared, refs = inside
    common.heading("inside: requests 2 and 3 while both run (prefix caching on)")
    print(f"block_table of request 2: {abbreviate(table_a)}")
    print(f"block_table of request 3: {abbreviate(table_b)}")
    print(f"{num_shared} physical blocks shared (ref_count {refs}); request 2 skipped {cached} prompt tokens "
          f"(num_cached_tokens)")
    prompt_len, n, rows = forks
    common.heading(f"parallel sampling: {n} samples of one {prompt_len}-token prompt (blocks of "
                   f"{block_size}), temperature 0.8, seeds 0..{n - 1}, {max_tokens} tokens out")
    print(common.table(["how", "prompt tokens computed", "KV blocks copied", "seconds", "same tokens"], rows))


def parallel_sampling(args, llm, prompt: list[int], n: int, max_tokens: int) -> tuple[int, int, list[list]]:
    """n samples of one prompt: n one-sample requests (seed j each), then one request with n (seed 0:
    sample j draws with seed j). Prompt tokens computed from llm.stats(); the prefix cache is emptied
    before each, so neither reuses the other's blocks."""
    import dataclasses

    from aios import SamplingParams

    params = SamplingParams(temperature=0.8, seed=0, max_tokens=max_tokens, ignore_eos=True)
    rows, tokens = [], {}
    for how in (f"{n} requests, n=1 each (prefix-cache hits)", f"1 request, n={n} (forked from one prefill)"):
        llm.block_manager.reset_prefix_cache()
        before = llm.stats()
        copies = 0
        with common.Timer(args.device) as t:
            if how.startswith("1 "):
                parent = llm.add_request(prompt, dataclasses.replace(params, n=n))
                while llm.has_unfinished_requests():
                    batch = llm.scheduler.schedule()
                    copies += len(batch.blocks_to_copy)
                    llm.step(batch)
                tokens[how] = [s.output_token_ids for s in parent.group.seqs]
            else:
                outs = llm.generate([prompt] * n, [params.for_choice(j) for j in range(n)], use_tqdm=False)
                tokens[how] = [o["token_ids"] for o in outs]
        computed = llm.stats()["num_computed_prompt_tokens"] - before["num_computed_prompt_tokens"]
        same = "-" if not rows else ("yes" if tokens[how] == next(iter(tokens.values())) else "NO")
        rows.append([how, computed, copies, t.seconds, same])
    return len(prompt), n, rows


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        raise SystemExit(f"{e}\nwrite it in workspace/lesson13.py; check it with: python lessons/check.py 13") from None
