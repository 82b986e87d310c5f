"""CUDA graphs for mixed steps (lesson 11, issue 21): a step holding prefill tokens, replayed.

The decode graphs (cuda_graph.py) cover steps of one token per sequence. A step that also holds a
prompt's chunk (a request has just arrived beside the running decodes) ran eagerly: on a small
model that is a host-bound step of ~300 launches, the tail of a server's inter-token latency.
This runner captures one graph per token bucket T (16, 32, ... up to `Config.cudagraph_mixed_tokens`)
and replays the smallest bucket that holds the step.

What makes a varlen step replayable: every shape is the bucket's, every value a static buffer.
- The step's n tokens fill the first n rows of [T]-row buffers; rows n..T are padding: token 0 at
  position 0, slot -1 (the K/V store skips it), in no sequence (no attention program reads or
  writes it). Their hidden rows are computed and never read.
- Its s sequences fill the first s rows of [S]-row buffers, S = min(T, max_num_seqs); sequences
  s..S are padding with 0 query and 0 context tokens (cu_seqlens_q repeats its last value).
- The prefill kernel's grid is static: a table of (seq, m_block) rows, one per program, sized for
  the worst batch of the bucket (`max_q_tiles`), built on the host each step (`prefill_q_tiles`,
  heaviest tiles first) and uploaded beside the inputs; rows past the step's tiles are (-1, 0) and
  exit at once. Its tile config is the one the kernel picks at max_seqlen_q = T.
- cu_seqlens_k is computed inside the graph from the context lengths, as the eager step does.
- The logits are those of the S rows `logits_indices` names (zero-padded); the first k are the step's.

A step replays only where all of that holds (`size_for`): prefill tokens, at most the largest
bucket, block tables no wider than max_model_len needs, no prompt-logprob rows (the caller's check:
they need every hidden row). `stage` and `forward_static` are the replay without the graph, so the
CPU tests run exactly what a replay runs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aios.engine.step_inputs import StepInputs
from aios.engine.upload import to_device
from aios.kernels.q_tiles import max_q_tiles, prefill_q_tiles, prefill_tile_rows
from aios.layers.attention import Attention
from aios.utils.context import Context, cu_seqlens


def mixed_sizes(max_tokens: int) -> list[int]:
    """The token buckets: powers of two from 16 below max_tokens, and max_tokens itself."""
    sizes, t = [], 16
    while t < max_tokens:
        sizes.append(t)
        t *= 2
    return sizes + [max_tokens] if max_tokens > 0 else []


class MixedCUDAGraphRunner:
    def __init__(self, model: nn.Module, max_tokens: int, max_num_seqs: int, max_blocks_per_seq: int,
                 max_model_len: int, device: torch.device) -> None:
        self.model, self.device = model, device
        self.sizes = mixed_sizes(max_tokens)
        self.max_blocks_per_seq, self.max_model_len = max_blocks_per_seq, max_model_len
        attn = next(m for m in model.modules() if isinstance(m, Attention))
        group = attn.num_heads // attn.num_kv_heads
        dtype = next(model.parameters()).dtype
        self.num_seqs = {t: min(t, max_num_seqs) for t in self.sizes}
        self.tile_rows = {t: prefill_tile_rows(attn.head_dim, dtype, device, t, group) for t in self.sizes}
        self.num_tiles = {t: max_q_tiles(t, self.num_seqs[t], self.tile_rows[t]) for t in self.sizes}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_logits: dict[int, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def allocate(self) -> None:
        """The static buffers, sized for the largest bucket; each graph reads a prefix of them."""
        top = max(self.sizes)
        seqs, tiles, d = self.num_seqs[top], max(self.num_tiles.values()), self.device
        self.v = {
            "input_ids": torch.zeros(top, dtype=torch.int64, device=d),
            "positions": torch.zeros(top, dtype=torch.int64, device=d),
            "slot_mapping": torch.full((top,), -1, dtype=torch.int64, device=d),
            "context_lens": torch.zeros(seqs, dtype=torch.int32, device=d),
            "cu_seqlens_q": torch.zeros(seqs + 1, dtype=torch.int32, device=d),
            "block_tables": torch.zeros(seqs, self.max_blocks_per_seq, dtype=torch.int32, device=d),
            "logits_indices": torch.zeros(seqs, dtype=torch.int64, device=d),
            "q_tiles": torch.full((tiles, 2), -1, dtype=torch.int32, device=d),
        }

    def forward_static(self, size: int) -> torch.Tensor:
        """The model over bucket `size`'s static buffers: what its graph captures. Logits [S, vocab]."""
        v, seqs = self.v, self.num_seqs[size]
        context_lens = v["context_lens"][:seqs]
        context = Context(
            is_prefill=True, slot_mapping=v["slot_mapping"][:size], block_tables=v["block_tables"][:seqs],
            context_lens=context_lens, cu_seqlens_q=v["cu_seqlens_q"][:seqs + 1],
            cu_seqlens_k=cu_seqlens(context_lens),
            max_seqlen_q=size, max_seqlen_k=self.max_model_len, q_tiles=v["q_tiles"][:self.num_tiles[size]])
        hidden = self.model(v["input_ids"][:size], v["positions"][:size], context)
        return self.model.compute_logits(hidden[v["logits_indices"][:seqs]])

    @torch.inference_mode()
    def capture(self) -> None:
        """One graph per bucket, largest first, sharing one memory pool. The capture's own run
        writes no K/V (every slot -1) and reads block 0 only."""
        self.allocate()
        pool = None
        for size in sorted(self.sizes, reverse=True):
            self._stage_dummy(size)
            self.forward_static(size)         # warm up: Triton compiles the tiled variant outside the capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.graph_logits[size] = self.forward_static(size)
            if pool is None:
                pool = graph.pool()
            self.graphs[size] = graph
            torch.cuda.synchronize(self.device)

    def _stage_dummy(self, size: int) -> None:
        """A valid step for the capture: one sequence of `size` tokens over block 0, storing nothing."""
        v, seqs = self.v, self.num_seqs[size]
        v["slot_mapping"].fill_(-1)
        v["block_tables"].zero_()
        v["context_lens"].zero_()
        v["context_lens"][0] = size
        v["cu_seqlens_q"].fill_(size)
        v["cu_seqlens_q"][0] = 0
        v["logits_indices"].fill_(size - 1)
        lens = np.zeros(seqs, np.int64)
        lens[0] = size
        tiles = prefill_q_tiles(lens, lens, self.tile_rows[size], self.num_tiles[size])
        v["q_tiles"][:len(tiles)].copy_(torch.from_numpy(tiles))

    def size_for(self, inputs: StepInputs) -> int | None:
        """The captured bucket to replay for this step, or None to run it eagerly."""
        return self.bucket_for(inputs) if self.graphs else None

    def bucket_for(self, inputs: StepInputs) -> int | None:
        """The smallest bucket that holds this step, captured or not; None for a pure-decode step
        (cuda_graph.py's) or one no bucket holds."""
        if not inputs.is_prefill or inputs.block_tables.shape[1] > self.max_blocks_per_seq:
            return None
        n = len(inputs.input_ids)
        return next((t for t in self.sizes if t >= n and len(inputs.context_lens) <= self.num_seqs[t]), None)

    def stage(self, t: dict[str, torch.Tensor], inputs: StepInputs, size: int) -> int:
        """Copy a step's device inputs `t` (its host arrays: `inputs`) into bucket `size`'s buffers,
        padding as the module docstring says; return the number of logits rows that are the step's."""
        v, n, s, seqs = self.v, len(inputs.input_ids), len(inputs.context_lens), self.num_seqs[size]
        for k in ("input_ids", "positions", "slot_mapping"):
            v[k][:n].copy_(t[k])
        v["input_ids"][n:size].zero_()
        v["positions"][n:size].zero_()
        v["slot_mapping"][n:size].fill_(-1)
        v["context_lens"][:s].copy_(t["context_lens"])
        v["context_lens"][s:seqs].zero_()
        v["cu_seqlens_q"][:s + 1].copy_(t["cu_seqlens_q"])
        v["cu_seqlens_q"][s + 1:seqs + 1].fill_(n)
        width = t["block_tables"].shape[1]
        v["block_tables"][:s, :width].copy_(t["block_tables"])
        v["block_tables"][:seqs, width:].fill_(-1)
        k = len(inputs.logits_indices)
        v["logits_indices"][:k].copy_(t["logits_indices"])
        v["logits_indices"][k:seqs].zero_()
        tiles = prefill_q_tiles(np.diff(inputs.cu_seqlens_q), inputs.context_lens, self.tile_rows[size],
                                self.num_tiles[size])
        v["q_tiles"][:len(tiles)].copy_(to_device(tiles, self.device))
        return k

    def replay(self, t: dict[str, torch.Tensor], inputs: StepInputs, size: int) -> torch.Tensor:
        """Logits [len(logits_indices), vocab] of the step, by the graph of bucket `size`."""
        k = self.stage(t, inputs, size)
        self.graphs[size].replay()
        return self.graph_logits[size][:k]

    def close(self) -> None:
        self.graphs.clear()
        self.graph_logits.clear()
        self.v.clear()
