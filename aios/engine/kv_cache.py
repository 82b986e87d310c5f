"""The paged KV cache's memory (lessons 05, 06): one tensor for every layer, and how many blocks fit.

    kv_cache: [2, num_layers, num_blocks, block_size, num_kv_heads, head_dim]
    layer i's Attention holds the views kv_cache[0, i] (K) and kv_cache[1, i] (V)

`KVCache` is the only writer of the layers' k_cache / v_cache. Sizing is a pure answer (a block
count): the model runner allocates that many, the engine's BlockManager hands them out.
"""

from __future__ import annotations

import torch

from aios.config import Config
from aios.layers.attention import Attention


class KVCache:
    def __init__(self, layers: list[Attention], block_size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.layers, self.block_size, self.dtype, self.device = layers, block_size, dtype, device
        self.num_kv_heads, self.head_dim = layers[0].num_kv_heads, layers[0].head_dim
        self.tensor = torch.empty(0)

    @property
    def block_bytes(self) -> int:
        """Bytes of one KV block across all layers (K and V)."""
        el = torch.empty(0, dtype=self.dtype).element_size()
        return 2 * len(self.layers) * self.block_size * self.num_kv_heads * self.head_dim * el

    def allocate(self, num_blocks: int) -> None:
        self.tensor = torch.empty(2, len(self.layers), num_blocks, self.block_size, self.num_kv_heads, self.head_dim,
                                  dtype=self.dtype, device=self.device)
        for i, layer in enumerate(self.layers):
            layer.k_cache, layer.v_cache = self.tensor[0, i], self.tensor[1, i]

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Block dst[i] becomes a copy of block src[i], in every layer's K and V (copy-on-write of a
        forked prompt's last block). One gather, then one scatter, over the whole cache tensor:
        every source is read before any destination is written, so a block may be both (freed by a
        preemption and handed out again within one schedule)."""
        self.tensor.index_copy_(2, dst, self.tensor.index_select(2, src))

    def free(self) -> None:
        for layer in self.layers:
            layer.k_cache = layer.v_cache = torch.empty(0)
        self.tensor = torch.empty(0)

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()


def cpu_num_blocks(config: Config, block_bytes: int) -> int:
    """On a CPU: what `cpu_kvcache_space_gib` holds, capped at what 64 sequences of max_model_len use."""
    blocks_per_seq = -(-config.max_model_len // config.kvcache_block_size)
    useful = blocks_per_seq * min(config.max_num_seqs, 64)
    return max(1, min(int(config.cpu_kvcache_space_gib * 2**30) // block_bytes, useful))


def gpu_num_blocks(config: Config, device: torch.device, block_bytes: int, peak_activation_bytes: int) -> int:
    """On a GPU: what is left under gpu_memory_utilization of the whole card once this process's
    weights and the peak activations of the largest step (measured by the caller) are counted,
    and what other processes hold."""
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    non_torch = (total - free) - torch.cuda.memory_reserved(device)      # other processes, CUDA context
    budget = int(total * config.gpu_memory_utilization) - non_torch - peak_activation_bytes
    return max(0, budget // block_bytes)
