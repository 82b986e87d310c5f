"""Attention metadata of one step: everything a kernel needs to find each token's K/V (lesson 07).

The model runner builds one `Context` per step from the scheduled batch and passes it down the
model's forward; no global state, so two engines can live in one process.

For a batch of sequences s = 0..B-1, each computing `seqlen_q[s]` new tokens on top of
`seqlen_k[s] - seqlen_q[s]` tokens already in the cache:
- `slot_mapping[t]`: flat cache slot (block_id * block_size + offset) where new token t's K/V go;
  -1 for padding tokens (CUDA graphs pad the batch), which the store kernel skips.
- `cu_seqlens_q` / `cu_seqlens_k`: prefix sums of seqlen_q / seqlen_k, int32, length B + 1.
- `block_tables[s]`: physical block ids of sequence s, padded with -1.
- `context_lens[s]` = seqlen_k[s]: tokens sequence s attends to (decode kernels use this).
- `q_tiles` (CUDA graphs of mixed steps only, aios/engine/cuda_graph_mixed.py): the prefill kernel's
  static schedule, one (seq, m_block) row per program, -1 rows padding; None: the kernel's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Context:
    is_prefill: bool                          # some sequence computes more than one token
    slot_mapping: torch.Tensor                # [num_tokens] int64
    block_tables: torch.Tensor                # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor                # [num_seqs] int32
    cu_seqlens_q: torch.Tensor | None = None  # [num_seqs + 1] int32 (prefill only)
    cu_seqlens_k: torch.Tensor | None = None  # [num_seqs + 1] int32 (prefill only)
    max_seqlen_q: int = 1
    max_seqlen_k: int = 0
    q_tiles: torch.Tensor | None = None       # [num_tiles, 2] int32 (prefill only, under a graph)


def cu_seqlens(lens: torch.Tensor) -> torch.Tensor:
    """[B] lengths -> their [B + 1] int32 prefix sums from 0, on lens's device (no host sync: it runs
    inside a CUDA graph too)."""
    return torch.nn.functional.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
