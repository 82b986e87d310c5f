"""Lesson 09's teaching code: attention computed tile by tile with an online softmax.

`attention_reference` materializes the whole [num_q, num_k] score matrix, as the torch reference
kernels in aios/kernels do. `attention_tiled` never holds more than one [block_m, block_n] tile of
scores: it streams the keys and keeps, per query row, a running max `m_i`, a running sum `l_i` of
exp(score - m_i), and a running output `acc`; when a new tile raises the max, the old sum and
output are rescaled by exp(m_old - m_new). That is FlashAttention's loop, in plain torch and slow
(a Python loop over tiles); aios/kernels/prefill_attention.py runs the same loop in Triton, with
the same names.
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
            m_new = torch.maximum(m_i, s.max(dim=-1).values)
            p = torch.exp(s - m_new[:, None])
            alpha = torch.exp(m_i - m_new)                              # rescales what came before
            l_i = l_i * alpha + p.sum(dim=-1)
            acc = acc * alpha[:, None] + p @ v_tile
            m_i = m_new
        out[start_m: start_m + block_m] = acc / l_i[:, None]
    tile_bytes = block_m * block_n * q.element_size()
    return out, {"tiles_visited": visited, "tiles_skipped": skipped, "score_bytes_held": tile_bytes}


def online_softmax_trace(scores: torch.Tensor, values: torch.Tensor, block: int) -> list[tuple]:
    """For one query row: (tile, m_i, l_i, acc / l_i) after each tile of `block` keys."""
    m_i, l_i = float("-inf"), 0.0
    acc = torch.zeros(values.shape[1])
    trace = []
    for start in range(0, len(scores), block):
        s, v = scores[start: start + block], values[start: start + block]
        m_new = max(m_i, float(s.max()))
        p = torch.exp(s - m_new)
        alpha = math.exp(m_i - m_new)                                   # exp(-inf) = 0 on the first tile
        l_i = l_i * alpha + float(p.sum())
        acc = acc * alpha + p @ v
        m_i = m_new
        trace.append((start // block, m_i, l_i, (acc / l_i).tolist()))
    return trace
