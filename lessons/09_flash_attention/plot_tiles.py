#!/usr/bin/env python
"""Draw tile_grid.png: causal attention of one 512-token sequence in 64 x 64 tiles, as
aios/kernels/prefill_attention.py visits them. Each row of tiles is one program (a BLOCK_M block of
queries); it streams key tiles left to right through the online softmax. Tiles left of the diagonal
run without a mask, diagonal tiles with the causal mask, tiles right of it are never visited.

    python lessons/09_flash_attention/plot_tiles.py        (needs matplotlib)
"""

from __future__ import annotations

import os

N, BLOCK_M, BLOCK_N = 512, 64, 64


def tile_kind(i: int, j: int) -> int:
    """0: skipped (every key after every query), 1: masked (crosses the diagonal), 2: full."""
    q_lo, q_hi = i * BLOCK_M, (i + 1) * BLOCK_M - 1
    k_lo, k_hi = j * BLOCK_N, (j + 1) * BLOCK_N - 1
    if k_lo > q_hi:
        return 0
    return 2 if k_hi <= q_lo else 1


def main() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rows, cols = N // BLOCK_M, N // BLOCK_N
    grid = [[tile_kind(i, j) for j in range(cols)] for i in range(rows)]
    colors = ["#eeeeee", "#f4a259", "#5b8e7d"]
    fig, ax = plt.subplots(figsize=(6, 5.4))
    ax.imshow(grid, cmap=ListedColormap(colors), vmin=0, vmax=2)
    for i in range(rows):
        for j in range(cols):
            if grid[i][j]:
                ax.text(j, i, str(j), ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(cols), [f"{j * BLOCK_N}" for j in range(cols)], fontsize=7)
    ax.set_yticks(range(rows), [f"{i * BLOCK_M}" for i in range(rows)], fontsize=7)
    ax.set_xlabel(f"key tile (BLOCK_N = {BLOCK_N}): streamed left to right, number = visit order")
    ax.set_ylabel(f"query tile (BLOCK_M = {BLOCK_M}): one program each")
    counts = [sum(r.count(k) for r in grid) for k in range(3)]
    ax.set_title(f"Causal attention, {N} tokens: {counts[2]} full + {counts[1]} masked tiles computed, "
                 f"{counts[0]} skipped", fontsize=9)
    ax.legend(handles=[Patch(color=colors[2], label="full tile: no mask"),
                       Patch(color=colors[1], label="diagonal tile: causal mask"),
                       Patch(color=colors[0], label="never visited")],
              loc="upper right", fontsize=8)
    fig.tight_layout()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tile_grid.png")
    fig.savefig(out, dpi=110)
    print(f"{counts[2]} full tiles, {counts[1]} diagonal tiles, {counts[0]} skipped; wrote {out}")


if __name__ == "__main__":
    main()
