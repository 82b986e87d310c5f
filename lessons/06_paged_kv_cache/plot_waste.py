#!/usr/bin/env python
"""Draw waste_vs_block_size.png: the share of reserved KV slots that hold no token, against the block
size, for the eight sequences run_lesson06.py runs (lengths as it printed them, bundled model, CPU)
and for the benchmark's workload (256 sequences, prompt + output lengths U[100, 1024] each, seed 0).
Pure arithmetic: a sequence of length L reserves ceil(L / block_size) * block_size slots.

    python lessons/06_paged_kv_cache/plot_waste.py        (needs matplotlib)
"""

from __future__ import annotations

import os
import random

LESSON_LENGTHS = [12, 27, 47, 61, 79, 125, 206, 304]          # run_lesson06.py's "tokens" column
BLOCK_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]


def waste(lengths: list[int], block_size: int) -> float:
    reserved = sum(-(-n // block_size) * block_size for n in lengths)
    return 1 - sum(lengths) / reserved


def main() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = random.Random(0)
    standard = [rng.randint(100, 1024) + rng.randint(100, 1024) for _ in range(256)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, lengths in (("the lesson's 8 sequences (12-304 tokens)", LESSON_LENGTHS),
                           ("benchmark workload (256 sequences, 200-2048 tokens)", standard)):
        ax.plot(BLOCK_SIZES, [100 * waste(lengths, b) for b in BLOCK_SIZES], marker="o", label=label)
    ax.axhline(100 * (1 - sum(LESSON_LENGTHS) / (8 * 2048)), color="gray", linestyle="--",
               label="contiguous, 2048 per sequence (lesson 05), the 8 sequences")
    ax.set_xscale("log", base=2)
    ax.set_xticks(BLOCK_SIZES, [str(b) for b in BLOCK_SIZES])
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("reserved KV slots holding no token (%)")
    ax.set_title("Waste vs block size: at most one partly filled block per sequence")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "waste_vs_block_size.png")
    fig.savefig(out, dpi=110)
    for b in (16, 256):
        print(f"block size {b:>4}: the lesson's sequences waste {100 * waste(LESSON_LENGTHS, b):.0f}%, "
              f"the benchmark workload {100 * waste(standard, b):.0f}%")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
