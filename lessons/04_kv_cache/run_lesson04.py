#!/usr/bin/env python
"""Lesson 04: the KV cache. Prefill the prompt once, then decode one token per step.

    no cache (lesson 03) : every step recomputes the whole sequence
    KV cache (lesson 04) : prefill computes the prompt's K/V once; each decode step computes one
                           token and attends to the cached K/V (kv_cache_loop.py)

Both are teaching loops over aios's modules (one sequence, plain torch): slow on purpose.
"""

from __future__ import annotations

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--lengths", type=int, nargs="+", default=None,
                    help="numbers of new tokens to try (default 32 128 512; 16 with --quick)")
    args = common.setup(ap.parse_args())
    lengths = args.lengths or ([16] if args.quick else [32, 128, 512])

    no_cache = common.load_module("03_own_the_model/no_cache_loop.py")
    kv = common.load_module("04_kv_cache/kv_cache_loop.py")
    print(common.describe(args))
    model = no_cache.load(args.model, args.device)
    tok = common.tokenizer(args)                          # a stand-in if the checkpoint has no tokenizer
    prompt = common.PROMPTS[0]
    ids = tok.encode(prompt, add_special_tokens=False)
    kv.generate_with_cache(model, ids, 4)                                               # warm-up

    rows = []
    for n in lengths:
        with common.Timer(args.device) as t0:
            slow, slow_computed = no_cache.generate_no_cache(model, ids, n)
        with common.Timer(args.device) as t1:
            fast, fast_computed, cache = kv.generate_with_cache(model, ids, n)
        same = "yes" if slow == fast else "NO"
        rows.append([n, "no cache (lesson 03)", slow_computed, t0.seconds, n / t0.seconds, "-"])
        rows.append([n, "KV cache (lesson 04)", fast_computed, t1.seconds, n / t1.seconds, same])
    common.heading(f"prompt {prompt!r} ({len(ids)} tokens), greedy")
    print(common.table(["new tokens", "loop", "tokens computed", "seconds", "tok/s", "same tokens"], rows))

    attn = model.model.layers[0].self_attn
    per_token = 2 * len(model.model.layers) * attn.num_kv_heads * attn.head_dim * cache.k[0].element_size()
    print(f"\nthe cache holds {cache.k[0].shape[0]} tokens x {per_token:,} bytes "
          f"(K and V, {len(model.model.layers)} layers, {attn.num_kv_heads} KV heads x {attn.head_dim}, "
          f"{str(cache.k[0].dtype).replace('torch.', '')}) = {cache.k[0].shape[0] * per_token / 2**20:.2f} MiB")
    print(f"torch.cat re-copied the growing cache every step: {cache.bytes_copied / 2**20:,.1f} MiB moved "
          f"(lesson 05 removes that)")


if __name__ == "__main__":
    main()
