"""Lesson 09's teaching code: attention computed tile by tile with an online softmax.

`attention_reference` materializes the whole [num_q, num_k] score matrix, as the torch reference
kernels in aios/kernels do. `attention_tiled` never holds more than one [block_m, block_n] tile of
scores: it streams the keys and keeps, per query row, a running max `m_i`, a running sum `l_i` of
exp(score - m_i), and a running output `acc`; when a new tile raises the max, the old sum and
output are rescaled by alpha = exp(m_old - m_new) <= 1 (`online_softmax_step`). That is
FlashAttention's loop, in plain torch and slow (a Python loop over tiles);
aios/kernels/prefill_attention.py runs the same loop in Triton, with the same names.
"""

from __future__ import annotations

import math

import torch


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Causal softmax(q k^T / sqrt(d)) v for one head. q, k, v: [n, d]. Returns (out, score bytes held)."""
    n, d = q.shape
    scores = (q @ k.T) / d ** 0.5                                       # [n, n]: all of it, at once
    mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    probs = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
    return probs @ v, scores.numel() * scores.element_size()


def online_softmax_step(m_i: torch.Tensor, l_i: torch.Tensor, acc: torch.Tensor, scores: torch.Tensor,
                        values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of keys into the running state of each query row.

    m_i [rows] running max, l_i [rows] running sum of exp(score - m_i), acc [rows, d] running sum of
    exp(score - m_i) * value; scores [rows, bn] this tile's scores (-inf where masked), values [bn, d].
    When the tile raises a row's max from m_i to m_new, everything summed so far was taken relative
    to the old, smaller max, so it is too large by exp(m_new - m_i): multiply it by
    alpha = exp(m_i - m_new) <= 1 (0 on the first tile, where m_i = -inf)."""
    m_new = torch.maximum(m_i, scores.max(dim=-1).values)
    p = torch.exp(scores - m_new[:, None])
    alpha = torch.exp(m_i - m_new)                                      # rescales what came before
    return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha[:, None] + p @ values


def attention_tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_m: int = 64, block_n: int = 64
                    ) -> tuple[torch.Tensor, dict]:
    """The same result, one [block_m, block_n] tile of scores at a time, tiles above the diagonal skipped."""
    n, d = q.shape
    out = torch.empty_like(q)
    visited = skipped = 0
    for start_m in range(0, n, block_m):
        q_tile = q[start_m: start_m + block_m]                          # [bm, d]
        rows = torch.arange(start_m, start_m + len(q_tile), device=q.device)
        m_i = torch.full((len(q_tile),), float("-inf"), device=q.device)  # running max of each row
        l_i = torch.zeros(len(q_tile), device=q.device)                 # running sum of exp(s - m_i)
        acc = torch.zeros(len(q_tile), d, device=q.device)              # running sum of exp(s - m_i) * v
        for start_n in range(0, n, block_n):
            if start_n > rows[-1]:                                      # every key here is in the future
                skipped += 1
                continue
            visited += 1
            k_tile, v_tile = k[start_n: start_n + block_n], v[start_n: start_n + block_n]
            s = (q_tile @ k_tile.T) / d ** 0.5                          # [bm, bn]: one tile of scores
            cols = torch.arange(start_n, start_n + len(k_tile), device=q.device)
            s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
            m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_tile)
        out[start_m: start_m + block_m] = acc / l_i[:, None]
    tile_bytes = block_m * block_n * q.element_size()
    return out, {"tiles_visited": visited, "tiles_skipped": skipped, "score_bytes_held": tile_bytes}


def online_softmax_trace(scores: torch.Tensor, values: torch.Tensor, block: int) -> list[tuple]:
    """For one query row: (tile, m_i, alpha, l_i, acc / l_i) after each tile of `block` keys."""
    m_i, l_i = torch.full((1,), float("-inf")), torch.zeros(1)
    acc = torch.zeros(1, values.shape[1])
    trace = []
    for start in range(0, len(scores), block):
        s, v = scores[None, start: start + block], values[start: start + block]
        m_new, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v)
        alpha = math.exp(float(m_i) - float(m_new))                     # exp(-inf) = 0 on the first tile
        m_i = m_new
        trace.append((start // block, float(m_i), alpha, float(l_i), (acc[0] / l_i).tolist()))
    return trace
