"""Lesson 09: FlashAttention. Attention over the paged KV cache, one tile of keys at a time, with an
online softmax: never the whole [seqlen_q, seqlen_k] score matrix.

Check: python lessons/check.py 09        Demo: python lessons/09_flash_attention/run_lesson09.py --mine
"""

from __future__ import annotations

import torch


def online_softmax_step(m_i: torch.Tensor, l_i: torch.Tensor, acc: torch.Tensor, scores: torch.Tensor,
                        values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of keys into each query row's running state; return (m_new, l_new, acc_new).

    m_i [rows]: the largest score seen so far (-inf before the first tile); l_i [rows]: the sum of
    exp(score - m_i) so far; acc [rows, d]: the sum of exp(score - m_i) * value so far; scores
    [rows, bn]: this tile's scores (-inf where masked; every row has a finite score by its first
    tile); values [bn, d]. After the last tile, acc / l_i[:, None] is softmax(scores) @ values.
    What was summed against the old max must be rescaled when the max grows.
    (lessons/09_flash_attention/README.md, "Build it")"""
    raise NotImplementedError("lesson 09: online_softmax_step (see README, 'Build it')")


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_seqlens_q: torch.Tensor,
                      cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, block_tables: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """Causal attention of a variable-length batch over the paged cache, tile by tile (block_n = 16
    keys at a time, say), with online_softmax_step: aios/kernels/prefill_attention.py's arguments.

    q [total_q, num_heads, head_dim]; k_cache, v_cache [num_blocks, block_size, num_kv_heads,
    head_dim]; sequence s owns query rows cu_seqlens_q[s] .. cu_seqlens_q[s+1]-1, which are the LAST
    seqlen_q of its seqlen_k = cu_seqlens_k[s+1] - cu_seqlens_k[s] tokens; its token at position p
    lives at k_cache[block_tables[s, p // block_size], p % block_size]. Query i sits at position
    seqlen_k - seqlen_q + i and sees keys 0 .. that position. GQA: query head h reads KV head
    h // (num_heads // num_kv_heads). Scores = q . k * scale, softmax in fp32; return
    [total_q, num_heads, head_dim] in q's dtype."""
    raise NotImplementedError("lesson 09: prefill_attention (see README, 'Build it')")


def prefill_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                             cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, max_seqlen_q: int,
                             max_seqlen_k: int, block_tables: torch.Tensor, scale: float) -> torch.Tensor:
    """STRETCH (optional; its check is skipped until you write it): the same function as a Triton
    kernel, one program per (query tile, head, sequence), streaming key tiles through the online
    softmax in registers. Checked on a GPU, or on a CPU under TRITON_INTERPRET=1 (tiny shapes)."""
    raise NotImplementedError("lesson 09: prefill_attention_triton, the stretch (see README, 'Build it')")
