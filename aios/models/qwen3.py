"""Qwen3 for inference: the decoder-only transformer, with no transformers model code (lesson 01).

    input_ids -> embed_tokens -> N x DecoderLayer -> norm -> lm_head (last token of each sequence)
    DecoderLayer: RMSNorm -> Attention -> (+residual) RMSNorm -> MLP -> (+residual)
    Attention:   qkv_proj -> per-head RMSNorm(q), RMSNorm(k) -> RoPE -> paged attention -> o_proj
    MLP:         gate_up_proj -> SiLU(gate) * up -> down_proj

q/k/v and gate/up are fused into one matmul each (lesson 10); `packed_modules_mapping` tells the
loader which checkpoint tensor goes into which slice of a fused weight. Every layer is built with
the engine's kernel `Backend` (aios/layers/backend.py); the model builds one RoPE table, shared by
every layer. A one-token step (batch-1 decode) on a backend with `fused_one_row`
(`Config.fuse_norm_into_gemv`) takes `Qwen3DecoderLayer.forward_one_row`: each add + RMSNorm, and
SiLU(gate) * up, runs inside the matmul after it, through the same modules, rounded the same way.
Otherwise, with `silu_in_gemv`
(`Config.silu_in_gemv`), a one-token `Qwen3MLP.forward` runs gate_up_proj and SiLU(gate) * up as one
kernel (`forward_then_silu_and_mul`). `parse_config` is the family's half of aios/models/registry.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aios.config import ModelConfig
from aios.distributed.tp_group import TPGroup
from aios.layers.activation import SiluAndMul
from aios.layers.attention import Attention
from aios.layers.backend import Backend, resolve
from aios.layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from aios.layers.layernorm import RMSNorm
from aios.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from aios.layers.rotary_embedding import RotaryEmbedding
from aios.utils.context import Context


def parse_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """A Qwen3 config.json: the shared decoder fields, and an error for each Qwen3 option that would
    change the math and is not implemented here."""
    unsupported = {
        "attention_bias": bool(raw.get("attention_bias")),
        "use_sliding_window": bool(raw.get("use_sliding_window")),
        "layer_types": any(t != "full_attention" for t in raw.get("layer_types") or []),
        "hidden_act": raw.get("hidden_act", "silu") != "silu",
        "rope_scaling": _rope_type(raw.get("rope_scaling")) not in (None, "default"),
        "rope_parameters": _rope_type(raw.get("rope_parameters")) not in (None, "default"),
    }
    for name, refused in unsupported.items():
        if refused:
            raise ValueError(f"{path}: {name}={raw[name]!r} is not supported for Qwen3 (it changes the math "
                             f"and aios does not implement it)")
    return ModelConfig.from_hf(raw, path, model_type="qwen3")


def _rope_type(rope: dict | None) -> str | None:
    return None if not rope else rope.get("rope_type", rope.get("type"))


class Qwen3Attention(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.head_dim = config.head_dim
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, config.num_attention_heads,
                                          config.num_key_value_heads, bias=False, tp=tp, backend=backend)
        self.num_heads = self.qkv_proj.num_heads              # per rank
        self.num_kv_heads = self.qkv_proj.num_kv_heads        # per rank
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.o_proj = RowParallelLinear(config.num_attention_heads * self.head_dim, config.hidden_size,
                                        bias=False, tp=tp, backend=backend)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, backend)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, backend)
        self.rotary_emb = rotary_emb                          # the model's one table
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim ** -0.5,
                              rotary_emb, backend)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, context: Context) -> torch.Tensor:
        qkv = self.qkv_proj(hidden_states)                    # [num_tokens, (nh + 2 * nkv) * head_dim]
        return self.forward_from_qkv(positions, qkv, context)

    def forward_from_qkv(self, positions: torch.Tensor, qkv: torch.Tensor, context: Context) -> torch.Tensor:
        """The block after its q/k/v projection (the one-row path computes qkv with the norm before it)."""
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)         # [num_tokens, num_heads, head_dim]
        k = k.view(-1, self.num_kv_heads, self.head_dim)      # [num_tokens, num_kv_heads, head_dim]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        # q/k-norm -> RoPE -> k, v into this layer's cache -> attention, with the backend's kernels
        o = self.attn(q, k, v, positions, context, self.q_norm, self.k_norm)   # [num_tokens, num_heads, head_dim]
        return self.o_proj(o.reshape(-1, self.q_size))


class Qwen3MLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2,
                                                       bias=False, tp=tp, backend=backend)
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False, tp=tp,
                                           backend=backend)
        self.act_fn = SiluAndMul(backend)
        self.silu_in_gemv = backend.silu_in_gemv              # one row: gate_up_proj + act_fn in one kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.silu_in_gemv and x.shape[0] == 1:
            return self.down_proj(self.gate_up_proj.forward_then_silu_and_mul(x))
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding,
                 mlp: nn.Module | None = None) -> None:
        """mlp: the layer's feed-forward block (None: Qwen3's dense MLP; Qwen3-MoE passes its experts)."""
        super().__init__()
        self.self_attn = Qwen3Attention(config, tp, backend, rotary_emb)
        self.mlp = mlp if mlp is not None else Qwen3MLP(config, tp, backend)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)
        # one-token steps go to forward_one_row with fused_one_row (a Qwen3-MoE layer with experts: never)
        self.fuse_one_row = backend.fused_one_row and mlp is None

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None,
                context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fuse_one_row and hidden_states.shape[0] == 1:
            return self.forward_one_row(positions, hidden_states, residual, context)
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, context)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual

    def forward_one_row(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None,
                        context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """forward for one token (batch-1 decode), fused kernels: each add + RMSNorm runs in the
        prologue of the matmul after it, and SiLU(gate) * up in down_proj's (aios/kernels/fused_gemv.py).
        Same modules, same rounding as forward; three launches fewer per layer (lesson 10)."""
        attn, mlp = self.self_attn, self.mlp
        qkv, residual = attn.qkv_proj.forward_after_norm(self.input_layernorm, hidden_states, residual)
        hidden_states = attn.forward_from_qkv(positions, qkv, context)
        gate_up, residual = mlp.gate_up_proj.forward_after_norm(self.post_attention_layernorm, hidden_states,
                                                                residual)
        return mlp.down_proj.forward_after_silu_and_mul(gate_up), residual


class Qwen3Model(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, max_model_len: int) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        # one cos/sin table for every layer, as long as the longest sequence the engine runs
        self.rotary_emb = RotaryEmbedding(config.head_dim, max_model_len, config.rope_theta, config.rope_scaling)
        self.layers = nn.ModuleList([self.build_layer(config, i, tp, backend)
                                     for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)

    def build_layer(self, config: ModelConfig, layer_idx: int, tp: TPGroup, backend: Backend) -> nn.Module:
        return Qwen3DecoderLayer(config, tp, backend, self.rotary_emb)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)          # [num_tokens, hidden_size]
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual, context)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class Qwen3ForCausalLM(nn.Module):
    model_cls = Qwen3Model                    # Qwen3-MoE swaps in its own (models/qwen3_moe.py)
    # checkpoint name -> (fused module name, shard id)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config: ModelConfig, tp: TPGroup | None = None, backend: Backend | None = None,
                 max_model_len: int | None = None) -> None:
        """backend: the kernels every layer runs (None: the fastest for the device it is built on);
        max_model_len: rows of the RoPE table (None: the checkpoint's max_position_embeddings)."""
        super().__init__()
        tp = tp or TPGroup()
        backend = resolve(backend)
        self.config = config
        self.model = self.model_cls(config, tp, backend, max_model_len or config.max_position_embeddings)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tp)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        return self.model(input_ids, positions, context)      # [num_tokens, hidden_size]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)                    # [num_seqs, vocab_size]
