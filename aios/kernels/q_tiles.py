"""The host side of the prefill kernel's static q-tile schedule (prefill_attention.py, "Static q-tile
schedule"): how many positions a tile holds, how many tiles a step can need, and the table of one
step. Numpy, no device work: it runs on the host every step a mixed-step CUDA graph replays
(aios/engine/cuda_graph_mixed.py), ~30-55 us for a few hundred sequences on a 2-core CPU.
"""

import numpy as np
import torch
import triton

from aios.kernels.prefill_attention import _prefill_config


def prefill_tile_rows(head_dim: int, dtype: torch.dtype, device: torch.device, max_seqlen_q: int, group: int,
                      pack_gqa: bool | None = None) -> int:
    """Query positions per tile (block_m // pack) of the config prefill_attention picks at this
    max_seqlen_q and GQA group (pack_gqa as _prefill_config's): the tile_rows of prefill_q_tiles."""
    cfg = _prefill_config(head_dim, dtype, device, max_seqlen_q, group=group, pack_gqa=pack_gqa)
    pack = triton.next_power_of_2(group) if cfg["pack_gqa"] else 1
    return cfg["block_m"] // pack


def max_q_tiles(num_tokens: int, num_seqs: int, tile_rows: int) -> int:
    """Tiles enough for any batch of at most num_tokens query tokens in at most num_seqs sequences.

    Each sequence with q > 0 tokens takes cdiv(q, tile_rows) <= (q + tile_rows - 1) / tile_rows
    tiles (at most one partial tile), so the batch takes at most
    (num_tokens + num_seqs * (tile_rows - 1)) // tile_rows <= cdiv(num_tokens, tile_rows) + num_seqs,
    and never more than num_tokens (each tile holds a token). The bound is reached (e.g. num_seqs - 1
    one-token decode rows and one chunk of the rest), except without sequences: no tokens, no tiles."""
    if num_tokens < 0 or num_seqs < 0 or tile_rows < 1:
        raise ValueError(f"max_q_tiles({num_tokens}, {num_seqs}, {tile_rows}): needs counts >= 0, tile_rows >= 1")
    if num_seqs == 0:
        return 0
    return min(num_tokens, (num_tokens + num_seqs * (tile_rows - 1)) // tile_rows)


def prefill_q_tiles(seqlens_q: np.ndarray, seqlens_k: np.ndarray, tile_rows: int, num_tiles: int) -> np.ndarray:
    """The static schedule of one step: int32 [num_tiles, 2], row t = (seq, m_block) of program t.

    Every sequence s with seqlens_q[s] > 0 gets the rows (s, m) for m = 0 .. cdiv(seqlens_q[s],
    tile_rows) - 1, each once; the rows are ordered heaviest first by the keys the tile visits,
    min(cached + (m + 1) * tile_rows, seqlens_k[s]) with cached = seqlens_k[s] - seqlens_q[s]
    (ties: by seq, then m), and followed by padding rows (-1, 0). ValueError if the step needs more
    than num_tiles rows (size the buffer with max_q_tiles)."""
    seqlens_q = np.asarray(seqlens_q, dtype=np.int64)
    seqlens_k = np.asarray(seqlens_k, dtype=np.int64)
    if seqlens_q.ndim != 1 or seqlens_q.shape != seqlens_k.shape:
        raise ValueError(f"seqlens_q {seqlens_q.shape} and seqlens_k {seqlens_k.shape}: need two equal 1-D shapes")
    if tile_rows < 1:
        raise ValueError(f"tile_rows={tile_rows}: needs >= 1")
    cached = seqlens_k - seqlens_q                      # num_cached_tokens of each sequence
    if seqlens_q.size and (seqlens_q.min() < 0 or cached.min() < 0):
        raise ValueError("prefill_q_tiles needs 0 <= seqlens_q <= seqlens_k")
    tiles_per_seq = (seqlens_q + tile_rows - 1) // tile_rows
    ends = np.cumsum(tiles_per_seq)
    total = int(ends[-1]) if ends.size else 0
    if total > num_tiles:
        raise ValueError(f"the step needs {total} q tiles of {tile_rows} rows, the table holds {num_tiles}")
    seq = np.repeat(np.arange(seqlens_q.size), tiles_per_seq)
    m_block = np.arange(total) - (ends - tiles_per_seq)[seq]
    work = np.minimum(cached[seq] + (m_block + 1) * tile_rows, seqlens_k[seq])
    order = np.argsort(-work, kind="stable")
    q_tiles = np.empty((num_tiles, 2), dtype=np.int32)
    q_tiles[:total, 0] = seq[order]
    q_tiles[:total, 1] = m_block[order]
    q_tiles[total:] = (-1, 0)
    return q_tiles
