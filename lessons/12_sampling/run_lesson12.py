#!/usr/bin/env python
"""Lesson 12: sampling. Greedy vs temperature / top-k / top-p, on the device, reproducible by seed.

    greedy  : temperature=0: always the most likely token (every earlier lesson)
    sampled : temperature > 0 draws from softmax(logits / temperature), optionally cut to the
              top_k likeliest tokens or to the smallest set whose mass reaches top_p
              (aios/layers/sampler.py: Gumbel-max, argmax(logits / T + g), g ~ Gumbel(0, 1))

A request with a seed gets the same tokens every time, whatever else shares its batch.

    --mine : every table below samples with YOUR apply_top_k_top_p_min_p and Sampler
             (workspace/lesson12.py); the engine runs as LLM(model, sampler=your Sampler())
"""

from __future__ import annotations

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--mine", action="store_true", help="sample with your code (workspace/lesson12.py)")
    args = common.setup(ap.parse_args())

    import torch

    from aios import LLM, SamplingParams
    from aios.layers.sampler import Sampler, SamplingTensors, apply_top_k_top_p_min_p

    if args.mine:
        from workspace.lesson12 import Sampler, apply_top_k_top_p_min_p
        print("--mine: the masks, the draws and the engine's sampler are YOURS (workspace/lesson12.py)")
    loop = common.load_module("03_own_the_model/no_cache_loop.py")
    print(common.describe(args))
    llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init,
              **({"sampler": Sampler()} if args.mine else {}))
    tok = common.tokenizer(args) if args.skip_tokenizer_init else llm.tokenizer
    prompt = common.prompt(args, common.PROMPTS[0])
    ids = llm.tokenize(prompt)
    model = loop.load(args.model, args.device)
    logits = loop.forward(model, torch.tensor(ids, device=args.device), torch.arange(len(ids), device=args.device))
    dev = args.device

    shown = tok.decode(prompt) if args.skip_tokenizer_init else prompt
    common.heading(f"the next-token distribution after {shown!r}, reshaped")
    settings = [("temperature 1.0", 1.0, None, None), ("temperature 0.5", 0.5, None, None),
                ("temperature 1.5", 1.5, None, None), ("top_k=3", 1.0, 3, None), ("top_p=0.9", 1.0, None, 0.9)]
    top = logits.topk(6).indices
    rows = [[repr(tok.decode([int(i)]))] for i in top]
    for _, temp, k, p in settings:
        t = SamplingTensors(temperatures=torch.tensor([temp], device=dev),
                            top_ks=None if k is None else torch.tensor([k], device=dev),
                            top_ps=None if p is None else torch.tensor([p], device=dev))
        probs = apply_top_k_top_p_min_p(logits[None] / temp, t).softmax(-1)[0]
        for row, i in zip(rows, top):
            row.append(float(probs[i]))
    print(common.table(["token"] + [s[0] for s in settings], rows))

    draws = 2000 if args.quick else 20_000
    common.heading(f"the sampler draws {draws:,} times at temperature 1: frequencies vs probabilities")
    gen = torch.Generator(device=dev).manual_seed(0)
    per_call = min(draws, max(1, 2**27 // len(logits)))     # rows per call: bounded memory for a large vocabulary
    samples = []
    for start in range(0, draws, per_call):
        m = min(per_call, draws - start)
        keys = torch.randint(0, 2**32, (m,), generator=gen, device=dev)          # one noise key per draw
        t = SamplingTensors(temperatures=torch.ones(m, device=dev), row_keys=keys)
        samples.append(Sampler()(logits[None].expand(m, -1), t))
    samples = torch.cat(samples)
    probs = logits.float().softmax(-1)
    counts = torch.bincount(samples, minlength=len(probs)).float() / draws
    print(common.table(["token", "softmax probability", "sampled frequency"],
                       [[repr(tok.decode([int(i)])), float(probs[i]), float(counts[i])] for i in top[:5]]))

    n = 4 if args.quick else 8
    max_tokens = 12 if args.quick else 24
    common.heading(f"the engine: {n} requests of the same prompt, {max_tokens} tokens each")
    greedy = llm.generate([prompt] * n, SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    sampled_params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens)
    sampled = llm.generate([prompt] * n, sampled_params, use_tqdm=False)
    rows = [["greedy (temperature=0)", len({tuple(o["token_ids"]) for o in greedy}), n],
            ["sampled (temperature=0.8, top_p=0.95)", len({tuple(o["token_ids"]) for o in sampled}), n]]
    print(common.table(["sampling", "distinct continuations", "requests"], rows))
    for o in sampled[:3]:
        print("  " + common.completion(args, prompt, o).replace("\n", " "))

    common.heading("seeds: the same seed gives the same tokens, alone or in a batch")
    seeded = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=1234)
    alone = llm.generate([prompt], seeded, use_tqdm=False)[0]["token_ids"]
    again = llm.generate([prompt], seeded, use_tqdm=False)[0]["token_ids"]
    others = [SamplingParams(temperature=1.0, max_tokens=max_tokens)] * (n - 1)
    batch = common.prompts(args, n)[1:n] + [prompt]
    in_batch = llm.generate(batch, others + [seeded], use_tqdm=False)[-1]["token_ids"]
    other_seed = llm.generate([prompt], SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=99),
                              use_tqdm=False)[0]["token_ids"]
    print(common.table(["run", "same tokens as the first"], [
        ["seed=1234, alone", "-"],
        ["seed=1234, alone, again", "yes" if again == alone else "NO"],
        [f"seed=1234, in a batch with {n - 1} unseeded requests", "yes" if in_batch == alone else "NO"],
        ["seed=99", "yes" if other_seed == alone else "no (a different seed)"],
    ]))


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        raise SystemExit(f"{e}\nwrite it in workspace/lesson12.py; check it with: python lessons/check.py 12") from None
