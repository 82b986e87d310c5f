"""Qwen3 for inference: the decoder-only transformer, with no transformers model code (lesson 01).

    input_ids -> embed_tokens -> N x DecoderLayer -> norm -> lm_head (last token of each sequence)
    DecoderLayer: RMSNorm -> Attention -> (+residual) RMSNorm -> MLP -> (+residual)
    Attention:   qkv_proj -> per-head RMSNorm(q), RMSNorm(k) -> RoPE -> paged attention -> o_proj
    MLP:         gate_up_proj -> SiLU(gate) * up -> down_proj

q/k/v and gate/up are fused into one matmul each (lesson 10); `packed_modules_mapping` tells the
loader which checkpoint tensor goes into which slice of a fused weight.
"""

from __future__ import annotations

import torch
from torch import nn

from aios.config import ModelConfig
from aios.distributed.tp_group import TPGroup
from aios.kernels import qk_norm_rope_ref, qk_norm_rope_store_kvcache
from aios.layers.activation import SiluAndMul
from aios.layers.attention import Attention
from aios.layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from aios.layers.layernorm import RMSNorm
from aios.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from aios.layers.rotary_embedding import RotaryEmbedding
from aios.utils.context import Context


class Qwen3Attention(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup) -> None:
        super().__init__()
        self.head_dim = config.head_dim
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, config.num_attention_heads,
                                          config.num_key_value_heads, bias=False, tp=tp)
        self.num_heads = self.qkv_proj.num_heads              # per rank
        self.num_kv_heads = self.qkv_proj.num_kv_heads        # per rank
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.o_proj = RowParallelLinear(config.num_attention_heads * self.head_dim, config.hidden_size,
                                        bias=False, tp=tp)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(self.head_dim, config.max_position_embeddings, config.rope_theta,
                                          config.rope_scaling)
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim ** -0.5)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, context: Context) -> torch.Tensor:
        qkv = self.qkv_proj(hidden_states)                    # [num_tokens, (nh + 2 * nkv) * head_dim]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)         # [num_tokens, num_heads, head_dim]
        k = k.view(-1, self.num_kv_heads, self.head_dim)      # [num_tokens, num_kv_heads, head_dim]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if q.is_cuda and self.q_norm.use_triton:              # one kernel; k and v go straight to the cache
            q = qk_norm_rope_store_kvcache(q, k, v, self.q_norm.weight, self.k_norm.weight, positions,
                                           self.rotary_emb.cos_sin_cache, self.q_norm.eps,
                                           self.attn.k_cache, self.attn.v_cache, context.slot_mapping)
            k = v = None
        else:                                                 # the plain-torch path (CPU): norm + RoPE
            q, k = qk_norm_rope_ref(q, k, self.q_norm.weight, self.k_norm.weight, positions,
                                    self.rotary_emb.cos_sin_cache, self.q_norm.eps)
        o = self.attn(q, k, v, context)                       # [num_tokens, num_heads, head_dim]
        return self.o_proj(o.reshape(-1, self.q_size))


class Qwen3MLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2,
                                                       bias=False, tp=tp)
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False, tp=tp)
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup) -> None:
        super().__init__()
        self.self_attn = Qwen3Attention(config, tp)
        self.mlp = Qwen3MLP(config, tp)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

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


class Qwen3Model(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        self.layers = nn.ModuleList([Qwen3DecoderLayer(config, tp) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)          # [num_tokens, hidden_size]
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual, context)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class Qwen3ForCausalLM(nn.Module):
    # checkpoint name -> (fused module name, shard id)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config: ModelConfig, tp: TPGroup | None = None) -> None:
        super().__init__()
        tp = tp or TPGroup()
        self.config = config
        self.model = Qwen3Model(config, tp)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tp)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        return self.model(input_ids, positions, context)      # [num_tokens, hidden_size]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)                    # [num_seqs, vocab_size]
