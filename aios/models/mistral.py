"""Mistral (v0.3 style) for inference: Llama's decoder with an optional sliding window (lesson 01).

    input_ids -> embed_tokens -> N x DecoderLayer -> norm -> lm_head (last token of each sequence)
    DecoderLayer: RMSNorm -> Attention -> (+residual) RMSNorm -> MLP -> (+residual)
    Attention:   qkv_proj -> RoPE -> paged attention (each query sees its last sliding_window tokens) -> o_proj
    MLP:         gate_up_proj -> SiLU(gate) * up -> down_proj

What differs from Qwen3 (aios/models/qwen3.py): no q/k norms, and config.json's `sliding_window`
(null in v0.3, 4096 in v0.1) applies to every layer, as in HF's MistralAttention. A window at least
`max_model_len` long can never hide a key, so those layers run full attention.
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
    """A Mistral config.json: the shared decoder fields plus `sliding_window`; an error for each
    option that would change the math and is not implemented here."""
    unsupported = {
        "attention_bias": bool(raw.get("attention_bias")),
        "mlp_bias": bool(raw.get("mlp_bias")),
        "hidden_act": raw.get("hidden_act", "silu") != "silu",
        "rope_scaling": _rope_type(raw.get("rope_scaling")) not in (None, "default"),
        "rope_parameters": _rope_type(raw.get("rope_parameters")) not in (None, "default"),
    }
    for name, refused in unsupported.items():
        if refused:
            raise ValueError(f"{path}: {name}={raw[name]!r} is not supported for Mistral (it changes the math "
                             f"and aios does not implement it)")
    window = raw.get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ValueError(f"{path}: sliding_window must be a positive int or null, got {window!r}")
    config = ModelConfig.from_hf(raw, path, model_type="mistral")
    config.sliding_window = window
    return config


def _rope_type(rope: dict | None) -> str | None:
    return None if not rope else rope.get("rope_type", rope.get("type"))


class MistralAttention(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding,
                 sliding_window: int | None) -> None:
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
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim ** -0.5,
                              rotary_emb, backend, sliding_window=sliding_window)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, context: Context) -> torch.Tensor:
        qkv = self.qkv_proj(hidden_states)                    # [num_tokens, (nh + 2 * nkv) * head_dim]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)         # [num_tokens, num_heads, head_dim]
        k = k.view(-1, self.num_kv_heads, self.head_dim)      # [num_tokens, num_kv_heads, head_dim]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        o = self.attn(q, k, v, positions, context)            # [num_tokens, num_heads, head_dim]
        return self.o_proj(o.reshape(-1, self.q_size))


class MistralMLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2,
                                                       bias=False, tp=tp, backend=backend)
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False, tp=tp,
                                           backend=backend)
        self.act_fn = SiluAndMul(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class MistralDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding,
                 sliding_window: int | None) -> None:
        super().__init__()
        self.self_attn = MistralAttention(config, tp, backend, rotary_emb, sliding_window)
        self.mlp = MistralMLP(config, tp, backend)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None,
                context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, context)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class MistralModel(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, max_model_len: int) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        self.rotary_emb = RotaryEmbedding(config.head_dim, max_model_len, config.rope_theta, config.rope_scaling)
        window = config.sliding_window
        if window is not None and window >= max_model_len:   # no sequence is long enough to leave it
            window = None
        self.layers = nn.ModuleList([MistralDecoderLayer(config, tp, backend, self.rotary_emb, window)
                                     for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)          # [num_tokens, hidden_size]
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual, context)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class MistralForCausalLM(nn.Module):
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
        super().__init__()
        tp = tp or TPGroup()
        backend = resolve(backend)
        self.config = config
        self.model = MistralModel(config, tp, backend, max_model_len or config.max_position_embeddings)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tp)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        return self.model(input_ids, positions, context)      # [num_tokens, hidden_size]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)                    # [num_seqs, vocab_size]
