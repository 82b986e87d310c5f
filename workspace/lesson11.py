"""Lesson 11: CUDA graphs. Choose the captured graph a decode step replays, and pad the step to it;
then the tile table that lets a mixed step (prefill tokens beside decodes) replay one too.

A graph is captured once per batch size (1, 2, 4, 8, ...) over static buffers (`graph_vars`); a
decode batch of 5 replays the graph of 8, with 3 padding rows that write nothing and read nothing.
`capture` and `close` are aios's own (CUDAGraphRunner in aios/engine/cuda_graph.py); the two
methods below are yours, and so are max_q_tiles and prefill_q_tiles at the end. All are plain
code, so the checks run them on a CPU (the runner with stand-in graphs, your tile table under the
Triton interpreter); on a GPU a check also captures real graphs and drives the engine with your runner.
Check: python lessons/check.py 11
"""

from __future__ import annotations

import numpy as np
import torch

from aios.engine.cuda_graph import CUDAGraphRunner as _AiosCUDAGraphRunner
from aios.engine.step_inputs import StepInputs


class CUDAGraphRunner(_AiosCUDAGraphRunner):
    """aios's runner (capture, close) with batch_size_for and replay left to you.

    What capture leaves you: self.batch_sizes (sorted), self.graphs {bs: graph with .replay()},
    self.graph_logits {bs: [bs, vocab] tensor the graph writes}, self.graph_vars {"input_ids",
    "positions", "slot_mapping" [max_bs] int64, "context_lens" [max_bs] int32, "block_tables"
    [max_bs, max_blocks_per_seq] int32}, self.max_blocks_per_seq."""

    def batch_size_for(self, inputs: StepInputs) -> int | None:
        """The captured batch size this step replays, or None to run it eagerly.

        Replay only a pure-decode step: not a prefill (inputs.is_prefill), every sequence samples
        (one logits row per sequence: len(inputs.logits_indices) == number of sequences, which is
        len(inputs.context_lens)), and its block tables no wider than the captured width
        (inputs.block_tables.shape[1] <= self.max_blocks_per_seq). Then: the smallest captured
        size >= the number of sequences that is in self.graphs; None if there is none (or no
        graphs at all). (lessons/11_cuda_graphs/README.md, "Build it")"""
        raise NotImplementedError("lesson 11: CUDAGraphRunner.batch_size_for (see README, 'Build it')")

    def replay(self, t: dict[str, torch.Tensor], graph_bs: int) -> torch.Tensor:
        """Logits [bs, vocab] of the step whose device inputs are `t`, by the graph of graph_bs.

        t holds "input_ids", "positions", "slot_mapping" [bs], "context_lens" [bs] and
        "block_tables" [bs, width] (width <= max_blocks_per_seq). Copy each into the first bs rows
        (and first width columns) of self.graph_vars; make rows bs..graph_bs padding: slot -1
        (their K/V is written nowhere) and context length 0 (they read nothing); fill the block
        table columns past width with -1 for rows 0..graph_bs. Then replay self.graphs[graph_bs]
        and return the first bs rows of self.graph_logits[graph_bs]. Copy in place (copy_, fill_):
        the graph reads these very buffers."""
        raise NotImplementedError("lesson 11: CUDAGraphRunner.replay (see README, 'Build it')")


# ---- the tile table of a graphed mixed step (README, "Build it: the tile table") ----------------

def max_q_tiles(num_tokens: int, num_seqs: int, tile_rows: int) -> int:
    """Rows the tile table of a graphed mixed step needs: enough for every step of at most
    num_tokens query tokens in at most num_seqs sequences, a sequence of q tokens taking
    cdiv(q, tile_rows) tiles; and no more than the worst such step needs. ValueError for a negative
    count or tile_rows < 1."""
    raise NotImplementedError("lesson 11: max_q_tiles (see README, 'The tile table of a graphed mixed step')")


def prefill_q_tiles(seqlens_q: np.ndarray, seqlens_k: np.ndarray, tile_rows: int, num_tiles: int) -> np.ndarray:
    """The table of one step, int32 [num_tiles, 2]: row t = (seq, m_block), the tile program t computes.

    Every sequence s with seqlens_q[s] > 0 gets the rows (s, m) for m in 0 .. cdiv(seqlens_q[s],
    tile_rows) - 1, each once, ordered heaviest first by the keys the tile visits,
    min(cached + (m + 1) * tile_rows, seqlens_k[s]) with cached = seqlens_k[s] - seqlens_q[s]; the
    rows after them are padding, (-1, 0). ValueError if the step needs more than num_tiles rows."""
    raise NotImplementedError("lesson 11: prefill_q_tiles (see README, 'The tile table of a graphed mixed step')")
