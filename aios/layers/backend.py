"""Which kernels the layers run: chosen once, when the model is built, and handed to every layer.

A `Backend` is five choices (lessons 09, 10, 16), made from `Config` by `Backend.from_config`:
- `attention`: an `AttentionBackend`, the functions that store K/V into the paged cache and attend
  over it. `TRITON_ATTENTION` is AIOS's FlashAttention prefill and paged decode kernels;
  `TORCH_ATTENTION` their references (the score matrix built whole); `TRITON_TMA_ATTENTION`
  (opt-in, "triton-tma") the same with prefill through Hopper TMA loads (prefill_attention_tma.py),
  checked against the model, dtype, GPU and block size at start-up. A learner's attention is one
  more `AttentionBackend`, passed in, not patched in.
- `fused_kernels`: the Triton RMSNorm(+residual), q/k-norm + RoPE + KV store (one launch per
  layer), SiLU*mul, one-row gemv and sampling kernels; False runs their torch references.
- `fused_one_row` (`Config.fuse_norm_into_gemv`, off by default; needs fused_kernels): a dense
  decoder layer's one-token step runs each add + RMSNorm and SiLU*mul inside the gemv after it
  (aios/kernels/fused_gemv.py, the layers' `forward_one_row`).
- `silu_in_gemv` (`Config.silu_in_gemv`, on by default; needs fused_kernels): a SiLU-gated dense
  MLP (Qwen3, Llama, Qwen2, Mistral; Qwen3-MoE's dense layers) given one row runs gate_up_proj and
  SiLU(gate) * up as one kernel, the activation in the gemv's epilogue (aios/kernels/gemv_silu_and_mul.py,
  `MergedColumnParallelLinear.forward_then_silu_and_mul`). A layer that takes `forward_one_row`
  (fused_one_row) never calls its MLP's forward, so there SiLU stays in down_proj's prologue.
- `moe_gemm_tma` (`Config.moe_gemm="tma"`, opt-in; needs fused_kernels and a Hopper GPU): the MoE
  layers' grouped GEMMs through aios/kernels/fused_moe_tma.py instead of fused_moe.py.
On a CPU all are the references whatever Config says: Triton compiles for CUDA only.

Each layer binds the functions it will call in its constructor and never looks again: no flag is
flipped after construction, and nothing asks a tensor which device it is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from aios.kernels import (
    decode_attention,
    decode_attention_ref,
    prefill_attention,
    prefill_attention_ref,
    store_kvcache,
    store_kvcache_ref,
)
from aios.kernels.device import is_hopper
from aios.kernels.prefill_attention_tma import check_prefill_attention_tma, prefill_attention_tma

if TYPE_CHECKING:
    from aios.config import Config


@dataclass(frozen=True)
class AttentionBackend:
    """The paged-attention kernels of one implementation; each takes its reference's arguments
    (aios/kernels/store_kvcache.py, prefill_attention.py, decode_attention.py). The attention
    functions get `sliding_window=W` as a keyword only from layers built with a window."""

    name: str
    store_kvcache: Callable[..., None]          # (k, v, k_cache, v_cache, slot_mapping)
    prefill_attention: Callable[..., torch.Tensor]
    decode_attention: Callable[..., torch.Tensor]


TRITON_ATTENTION = AttentionBackend("triton", store_kvcache, prefill_attention, decode_attention)
TRITON_TMA_ATTENTION = AttentionBackend("triton-tma", store_kvcache, prefill_attention_tma, decode_attention)
TORCH_ATTENTION = AttentionBackend("torch", store_kvcache_ref, prefill_attention_ref, decode_attention_ref)
ATTENTION_BACKENDS = {b.name: b for b in (TRITON_ATTENTION, TRITON_TMA_ATTENTION, TORCH_ATTENTION)}


@dataclass(frozen=True)
class Backend:
    attention: AttentionBackend = TORCH_ATTENTION
    fused_kernels: bool = False                 # lesson 10
    # lesson 10: one-token steps run add + RMSNorm and SiLU * up inside the next gemv (needs fused_kernels)
    fused_one_row: bool = False
    # lesson 10: a one-row SiLU-gated MLP applies SiLU * up in gate_up's gemv (needs fused_kernels)
    silu_in_gemv: bool = False
    # lesson 16 / issue 21: the MoE's grouped GEMMs through TMA (needs fused_kernels and a Hopper GPU)
    moe_gemm_tma: bool = False
    # issue 21: linear layers of 2 ... 64 rows through skinny_gemm instead of cuBLAS (Config.decode_gemm="skinny")
    skinny_gemm: bool = False

    @classmethod
    def from_config(cls, config: Config, device: torch.device | str | None = None) -> Backend:
        """The engine's choice: `Config.attention_backend` and `Config.fused_kernels` on a GPU, the
        references on a CPU. `device` defaults to `config.device` (a TP worker passes its own)."""
        device = torch.device(device if device is not None else config.device)
        if device.type != "cuda":
            return TORCH
        attention = ATTENTION_BACKENDS[config.attention_backend]
        if attention is TRITON_TMA_ATTENTION:          # its refusals at start-up, not in a request's step
            check_prefill_attention_tma(config.hf_config.head_dim, config.dtype, device, config.kvcache_block_size)
        moe_gemm_tma = config.fused_kernels and config.moe_gemm == "tma"
        if moe_gemm_tma and not is_hopper(device):
            raise ValueError("moe_gemm='tma' needs a Hopper GPU (TMA loads): use moe_gemm='triton'")
        return cls(attention, config.fused_kernels, config.fused_kernels and config.fuse_norm_into_gemv,
                   config.fused_kernels and config.silu_in_gemv, moe_gemm_tma,
                   config.fused_kernels and config.decode_gemm == "skinny")

    @classmethod
    def for_device(cls, device: torch.device | str) -> Backend:
        """The fastest choice for a device: every Triton kernel on CUDA, the references elsewhere."""
        return TRITON if torch.device(device).type == "cuda" else TORCH


TORCH = Backend(TORCH_ATTENTION, fused_kernels=False)
TRITON = Backend(TRITON_ATTENTION, fused_kernels=True)


def resolve(backend: Backend | None) -> Backend:
    """A layer's `backend=None`: the fastest for the device the layer is being built on (inside
    `with torch.device("cuda"):` the Triton kernels, else the references)."""
    return backend if backend is not None else Backend.for_device(torch.get_default_device())
