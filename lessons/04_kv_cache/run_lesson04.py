#!/usr/bin/env python
"""Lesson 04: the KV cache. Prefill the prompt once, then decode one token per step.

    no cache (lesson 03) : every step recomputes the whole sequence
    KV cache (lesson 04) : prefill computes the prompt's K/V once; each decode step computes one
                           token and attends to the cached K/V (kv_cache_loop.py)

Both are teaching loops over lesson 03's own modules (one sequence, plain torch): slow on purpose.
Without --quick it also draws positions_vs_length.png (matplotlib, where installed).
"""

from __future__ import annotations

import sys

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
    if args.quick:
        print("--quick: a smoke test (few, short requests); its times say nothing about speed: run without it")
    try:
        model = no_cache.load_unfused(args.model, args.device)
    except ValueError as e:                               # a family the teaching model does not compute
        sys.exit(f"error: {e}")
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
    if not args.quick:
        plot_positions(len(ids), max(lengths), rows)

    attn = model.model.layers[0].self_attn
    per_token = 2 * len(model.model.layers) * attn.num_kv_heads * attn.head_dim * cache.k[0].element_size()
    print(f"\nthe cache holds {cache.k[0].shape[0]} tokens x {per_token:,} bytes "
          f"(K and V, {len(model.model.layers)} layers, {attn.num_kv_heads} KV heads x {attn.head_dim}, "
          f"{str(cache.k[0].dtype).replace('torch.', '')}) = {cache.k[0].shape[0] * per_token / 2**20:.2f} MiB")
    print(f"torch.cat re-copied the growing cache every step: {cache.bytes_copied / 2**20:,.1f} MiB moved "
          f"(lesson 05 removes that)")


def plot_positions(prompt_len: int, max_new: int, rows: list) -> None:
    """positions_vs_length.png beside this script: positions computed against new tokens, both loops."""
    from pathlib import Path
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib not installed: no figure; pip install matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = range(1, max_new + 1)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(n, [k * prompt_len + k * (k - 1) // 2 for k in n], label="no cache: n*P + n(n-1)/2")
    ax.plot(n, [prompt_len + k - 1 for k in n], label="KV cache: P + n - 1")
    for label, marker in (("no cache (lesson 03)", "o"), ("KV cache (lesson 04)", "s")):
        pts = [(r[0], r[2]) for r in rows if r[1] == label]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color="black", zorder=3)
    ax.set_xlabel("new tokens n")
    ax.set_ylabel("token positions computed")
    ax.set_yscale("log")
    ax.set_title(f"prompt of P = {prompt_len} tokens (dots: measured by this script)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(__file__).resolve().parent / "positions_vs_length.png"
    fig.savefig(out)
    print(f"figure: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
