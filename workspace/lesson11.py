"""Lesson 11: CUDA graphs. Choose the captured graph a decode step replays, and pad the step to it.

A graph is captured once per batch size (1, 2, 4, 8, ...) over static buffers (`graph_vars`); a
decode batch of 5 replays the graph of 8, with 3 padding rows that write nothing and read nothing.
`capture` and `close` are aios's own (CUDAGraphRunner in aios/engine/cuda_graph.py); the two
methods below are yours. Both are plain tensor code, so the checks run them on a CPU with stand-in
graphs; on a GPU a check also captures real graphs and drives the engine with your runner.
Check: python lessons/check.py 11
"""

from __future__ import annotations

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
