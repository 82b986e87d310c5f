"""Token embedding and LM head, split along the vocabulary across TP ranks (lesson 14).

Rank r owns token ids [r * shard, (r + 1) * shard) with shard = ceil(vocab / tp); the last
shard is zero-padded. The embedding zeroes ids outside the shard and all-reduces; the LM head
computes its shard of the logits and all-gathers them (only rank 0 samples, but gathering keeps
every rank's forward identical, which CUDA graphs and the collectives need).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aios.distributed.tp_group import TPGroup


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, tp: TPGroup | None = None) -> None:
        super().__init__()
        self.tp = tp or TPGroup()
        self.vocab_size = vocab_size
        self.shard_size = (vocab_size + self.tp.size - 1) // self.tp.size
        self.vocab_start = self.tp.rank * self.shard_size
        self.weight = nn.Parameter(torch.empty(self.shard_size, hidden_size), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        shard = loaded_weight[self.vocab_start: self.vocab_start + self.shard_size]
        param.data.zero_()
        param.data[: shard.shape[0]].copy_(shard)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.vocab_start
        in_shard = (local >= 0) & (local < self.shard_size)
        y = F.embedding(local.clamp(0, self.shard_size - 1), self.weight) * in_shard.unsqueeze(-1)
        return self.tp.all_reduce(y)


class ParallelLMHead(VocabParallelEmbedding):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        logits = F.linear(hidden_states, self.weight)                  # [num_seqs, shard_size]
        if self.tp.size > 1:
            logits = self.tp.all_gather_last_dim(logits)[:, : self.vocab_size]
        return logits
