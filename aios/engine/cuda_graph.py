"""CUDA graphs for decode steps (lesson 11): capture once per batch size, replay with new inputs.

A graph replays fixed kernels on fixed addresses, so a step's inputs are copied into static
buffers first; a batch of 5 replays the graph of 8 with 3 padding rows that write nothing
(slot -1) and read nothing (context length 0).

When a step replays and when it runs eagerly (`batch_size_for`): only a pure-decode step (one
token per sequence, each sampling) of at most the largest captured batch, with block tables no
wider than max_model_len needs, replays; anything else (prefill chunks, a mixed step) runs eagerly.
"""

from __future__ import annotations

import torch
from torch import nn

from aios.engine.step_inputs import StepInputs
from aios.utils.context import Context


class CUDAGraphRunner:
    def __init__(self, model: nn.Module, batch_sizes: list[int], max_blocks_per_seq: int,
                 device: torch.device) -> None:
        self.model, self.batch_sizes = model, sorted(batch_sizes)
        self.max_blocks_per_seq, self.device = max_blocks_per_seq, device
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_logits: dict[int, torch.Tensor] = {}
        self.graph_vars: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def capture(self) -> None:
        max_bs = max(self.batch_sizes)
        d, width = self.device, self.max_blocks_per_seq
        self.graph_vars = {
            "input_ids": torch.zeros(max_bs, dtype=torch.int64, device=d),
            "positions": torch.zeros(max_bs, dtype=torch.int64, device=d),
            "slot_mapping": torch.full((max_bs,), -1, dtype=torch.int64, device=d),
            "context_lens": torch.zeros(max_bs, dtype=torch.int32, device=d),
            "block_tables": torch.zeros(max_bs, width, dtype=torch.int32, device=d),
        }
        v = self.graph_vars
        pool = None
        for bs in sorted(self.batch_sizes, reverse=True):
            context = Context(is_prefill=False, slot_mapping=v["slot_mapping"][:bs],
                              block_tables=v["block_tables"][:bs], context_lens=v["context_lens"][:bs])
            # warm up (Triton compiles, cuBLAS picks kernels) outside the capture
            self.model.compute_logits(self.model(v["input_ids"][:bs], v["positions"][:bs], context))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                hidden = self.model(v["input_ids"][:bs], v["positions"][:bs], context)
                self.graph_logits[bs] = self.model.compute_logits(hidden)
            if pool is None:
                pool = graph.pool()
            self.graphs[bs] = graph
            torch.cuda.synchronize(d)

    def batch_size_for(self, inputs: StepInputs) -> int | None:
        """The captured batch size to replay for this step, or None to run it eagerly."""
        if not self.graphs or inputs.is_prefill:
            return None
        bs = len(inputs.context_lens)
        if inputs.block_tables.shape[1] > self.max_blocks_per_seq or len(inputs.logits_indices) != bs:
            return None
        return next((s for s in self.batch_sizes if s >= bs and s in self.graphs), None)

    def replay(self, t: dict[str, torch.Tensor], graph_bs: int) -> torch.Tensor:
        """Logits [bs, vocab] of the step whose device inputs are `t`, by the graph of graph_bs."""
        v, bs = self.graph_vars, t["context_lens"].shape[0]
        width = t["block_tables"].shape[1]
        for k in ("input_ids", "positions", "slot_mapping", "context_lens"):
            v[k][:bs].copy_(t[k])
        v["slot_mapping"][bs:graph_bs].fill_(-1)       # padding rows write nothing
        v["context_lens"][bs:graph_bs].fill_(0)        # ... and read nothing
        v["block_tables"][:bs, :width].copy_(t["block_tables"])
        v["block_tables"][:graph_bs, width:].fill_(-1)
        self.graphs[graph_bs].replay()
        return self.graph_logits[graph_bs][:bs]

    def close(self) -> None:
        self.graphs.clear()
        self.graph_logits.clear()
        self.graph_vars.clear()
