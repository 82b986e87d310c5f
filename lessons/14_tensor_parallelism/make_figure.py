#!/usr/bin/env python
"""Draw column_row_split.png: an MLP split over two ranks, column-parallel up, row-parallel down.

    python lessons/14_tensor_parallelism/make_figure.py      (needs matplotlib)

Matrices are drawn in the math orientation y = x @ W^T: the up projection's W^T is [in, hidden] and
column parallel cuts its columns (the hidden features); the down projection's W^T is [hidden, out]
and row parallel cuts its rows (the same hidden features), so each rank's half of h meets its own
half of the down projection, and one all-reduce adds the two partial outputs.
"""

from __future__ import annotations

from pathlib import Path

RANK_COLORS = ("#4C72B0", "#DD8452")


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.set_xlim(0, 22)
    ax.set_ylim(0, 8.4)
    ax.axis("off")

    def box(x, y, w, h, color, label="", alpha=0.85, fontsize=9):
        ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="black", alpha=alpha, lw=1))
        if label:
            ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=fontsize, color="white"
                    if color != "white" else "black")

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="->", mutation_scale=12, lw=1))

    # x: replicated on both ranks
    box(0.3, 3.2, 1.2, 2.0, "#888888", "x\n(both)")
    ax.text(0.9, 2.8, "[tokens, in]", ha="center", fontsize=8)
    arrow(1.6, 4.2, 2.5, 4.2)
    # W_up^T split by columns
    box(2.6, 2.6, 1.6, 3.2, RANK_COLORS[0], "W_up^T\ncols of\nrank 0")
    box(4.2, 2.6, 1.6, 3.2, RANK_COLORS[1], "W_up^T\ncols of\nrank 1")
    ax.text(4.2, 6.2, "column parallel (gate_up_proj, qkv_proj)\nsplit the output features: no communication",
            ha="center", fontsize=9)
    ax.text(4.2, 2.2, "[in, hidden]", ha="center", fontsize=8)
    arrow(6.0, 4.2, 6.9, 4.2)
    # h: split
    box(7.0, 3.2, 0.9, 2.0, RANK_COLORS[0], "h0")
    box(7.9, 3.2, 0.9, 2.0, RANK_COLORS[1], "h1")
    ax.text(7.9, 2.8, "[tokens, hidden / 2] each", ha="center", fontsize=8)
    arrow(9.0, 4.2, 9.9, 4.2)
    # W_down^T split by rows
    box(10.0, 4.2, 2.6, 1.6, RANK_COLORS[0], "W_down^T\nrows of rank 0", fontsize=8)
    box(10.0, 2.6, 2.6, 1.6, RANK_COLORS[1], "W_down^T\nrows of rank 1", fontsize=8)
    ax.text(11.3, 6.2, "row parallel (down_proj, o_proj)\nsplit the input features", ha="center", fontsize=9)
    ax.text(11.3, 2.2, "[hidden, out]", ha="center", fontsize=8)
    arrow(12.8, 5.0, 13.9, 5.4)
    arrow(12.8, 3.4, 13.9, 3.0)
    # partial sums
    box(13.9, 4.9, 1.8, 1.1, RANK_COLORS[0], "h0 @ W0", fontsize=8)
    box(13.9, 2.4, 1.8, 1.1, RANK_COLORS[1], "h1 @ W1", fontsize=8)
    ax.text(14.8, 4.2, "partial outputs\n[tokens, out]", ha="center", va="center", fontsize=8)
    arrow(15.8, 5.4, 16.8, 4.5)
    arrow(15.8, 3.0, 16.8, 3.9)
    box(16.9, 3.5, 2.0, 1.4, "#55A868", "all-reduce\n(sum)", fontsize=8)
    arrow(18.9, 4.2, 19.8, 4.2)
    box(19.9, 3.2, 1.6, 2.0, "#888888", "y\n(both)")
    ax.text(20.7, 2.8, "[tokens, out]", ha="center", fontsize=8)
    ax.text(11, 0.9, "rank 0 holds the blue parts, rank 1 the orange ones: half of every weight each. "
            "One all-reduce per row-parallel layer:\ntwo per transformer layer (after o_proj and after down_proj).",
            ha="center", fontsize=9)
    ax.text(11, 7.8, "One MLP over two ranks: y = (x @ W_up^T) @ W_down^T  (activation omitted)", ha="center",
            fontsize=11, weight="bold")
    out = Path(__file__).with_name("column_row_split.png")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
