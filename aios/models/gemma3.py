"""Gemma 3 (text) for inference: interleaved sliding-window and global layers (lesson 01).

    input_ids -> embed_tokens * sqrt(hidden_size) -> N x DecoderLayer -> norm -> lm_head -> softcap
    DecoderLayer: norm -> Attention -> norm -> (+residual) norm -> MLP -> norm -> (+residual)
    Attention:   qkv_proj -> per-head norm(q), norm(k) -> RoPE (local or global base)
                 -> paged attention (sliding layers: each query sees its last sliding_window tokens) -> o_proj
    MLP:         gate_up_proj -> GELU_tanh(gate) * up -> down_proj

What differs from Qwen3 (aios/models/qwen3.py): every norm is Gemma's (1 + weight) RMSNorm
(layers/layernorm.py, GemmaRMSNorm), with a norm after attention and after the MLP as well as
before; GeGLU instead of SwiGLU; the embedding is scaled by sqrt(hidden_size), rounded to the
model's dtype as HF does; the attention scale is query_pre_attn_scalar ** -0.5; `layer_types`
(or the older `sliding_window_pattern`) makes some layers sliding, RoPE base `rope_local_base_freq`,
and the rest global, base `rope_theta`: one RoPE table per base, shared by the layers of its kind.
The q/k norms run as their own op before Attention (the fused q/k-norm kernel computes weight *
rmsnorm, not Gemma's (1 + weight)). `final_logit_softcapping` caps the logits; attention-logit
softcapping is refused (HF's Gemma3 does not apply it either).
Multimodal "gemma3" checkpoints (Gemma3ForConditionalGeneration: a vision tower, weights under
model.language_model) are not a registered family; the registry's error names them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aios.config import ModelConfig
from aios.distributed.tp_group import TPGroup
from aios.layers.activation import GeluTanhAndMul
from aios.layers.attention import Attention
from aios.layers.backend import Backend, resolve
from aios.layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from aios.layers.layernorm import GemmaRMSNorm
from aios.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from aios.layers.rotary_embedding import RotaryEmbedding
from aios.utils.context import Context

LAYER_TYPES = ("sliding_attention", "full_attention")


def parse_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """A Gemma3TextConfig config.json (transformers 4.5x or 5.x): the shared decoder fields plus the
    layer kinds, the two RoPE bases, the attention scale and the logit cap; an error for each
    option that would change the math and is not implemented here."""
    rope_params = raw.get("rope_parameters") or {}
    per_kind = rope_params if any(k in rope_params for k in LAYER_TYPES) else {"full_attention": rope_params}
    layer_types = raw.get("layer_types") or [
        "sliding_attention" if (i + 1) % raw.get("sliding_window_pattern", 6) else "full_attention"
        for i in range(raw.get("num_hidden_layers", 0))]
    unsupported = {
        "attention_bias": bool(raw.get("attention_bias")),
        "hidden_activation": raw.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh",
        "attn_logit_softcapping": raw.get("attn_logit_softcapping") is not None,
        "use_bidirectional_attention": bool(raw.get("use_bidirectional_attention")),
        "rope_scaling": _rope_type(raw.get("rope_scaling")) not in (None, "default"),
        "rope_parameters": any(_rope_type(p) not in (None, "default") for p in per_kind.values()),
        "layer_types": any(t not in LAYER_TYPES for t in layer_types)
                       or len(layer_types) != raw.get("num_hidden_layers"),
        "sliding_window": "sliding_attention" in layer_types and not _positive_int(raw.get("sliding_window", 4096)),
    }
    for name, refused in unsupported.items():
        if refused:
            raise ValueError(f"{path}: {name}={raw.get(name)!r} is not supported for Gemma 3 (it changes the "
                             f"math and aios does not implement it)")
    config = ModelConfig.from_hf(raw, path, model_type="gemma3_text")
    config.tie_word_embeddings = raw.get("tie_word_embeddings", True)      # Gemma 3's default
    config.rope_theta = (per_kind.get("full_attention") or {}).get("rope_theta", raw.get("rope_theta", 1e6))
    config.rope_local_theta = (per_kind.get("sliding_attention") or {}).get(
        "rope_theta", raw.get("rope_local_base_freq", 1e4))
    config.rope_scaling = None
    config.layer_types = list(layer_types)
    config.sliding_window = raw.get("sliding_window", 4096)
    config.query_pre_attn_scalar = raw.get("query_pre_attn_scalar", 256)
    config.final_logit_softcapping = raw.get("final_logit_softcapping")
    return config


def _rope_type(rope: dict | None) -> str | None:
    return None if not rope else rope.get("rope_type", rope.get("type"))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class Gemma3Attention(nn.Module):
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
        self.q_norm = GemmaRMSNorm(self.head_dim, config.rms_norm_eps, backend)
        self.k_norm = GemmaRMSNorm(self.head_dim, config.rms_norm_eps, backend)
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim,
                              config.query_pre_attn_scalar ** -0.5, rotary_emb, backend,
                              sliding_window=sliding_window)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, context: Context) -> torch.Tensor:
        qkv = self.qkv_proj(hidden_states)                    # [num_tokens, (nh + 2 * nkv) * head_dim]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self.q_norm(q.reshape(-1, self.head_dim)).view(-1, self.num_heads, self.head_dim)
        k = self.k_norm(k.reshape(-1, self.head_dim)).view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        o = self.attn(q, k, v, positions, context)            # RoPE -> cache -> attention
        return self.o_proj(o.reshape(-1, self.q_size))


class Gemma3MLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2,
                                                       bias=False, tp=tp, backend=backend)
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False, tp=tp,
                                           backend=backend)
        self.act_fn = GeluTanhAndMul(backend)      # GeGLU: no one-row fusion (gemv_silu_and_mul is SiLU's)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding,
                 sliding_window: int | None) -> None:
        super().__init__()
        self.self_attn = Gemma3Attention(config, tp, backend, rotary_emb, sliding_window)
        self.mlp = Gemma3MLP(config, tp, backend)
        eps = config.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, eps, backend)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, eps, backend)
        self.pre_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, eps, backend)
        self.post_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, eps, backend)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None,
                context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        # residual + post_norm(sublayer(pre_norm(x))), twice; each residual add is fused into the next pre-norm
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.post_attention_layernorm(self.self_attn(positions, hidden_states, context))
        hidden_states, residual = self.pre_feedforward_layernorm(hidden_states, residual)
        return self.post_feedforward_layernorm(self.mlp(hidden_states)), residual


class Gemma3Model(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, max_model_len: int) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        # HF: a float32 tensor, cast to the weights' dtype before the multiply
        self.register_buffer("embed_scale", torch.tensor(config.hidden_size ** 0.5, dtype=torch.float32),
                             persistent=False)
        window = config.sliding_window
        if window is not None and window >= max_model_len:   # no sequence is long enough to leave it
            window = None
        kinds = config.layer_types
        # one cos/sin table per RoPE base, shared by every layer of that kind
        tables = {kind: RotaryEmbedding(config.head_dim, max_model_len, theta)
                  for kind, theta in (("full_attention", config.rope_theta),
                                      ("sliding_attention", config.rope_local_theta)) if kind in kinds}
        self.rotary_embs = nn.ModuleDict(tables)
        self.layers = nn.ModuleList([
            Gemma3DecoderLayer(config, tp, backend, tables[kind], window if kind == "sliding_attention" else None)
            for kind in kinds])
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps, backend)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)          # [num_tokens, hidden_size]
        hidden_states = hidden_states * self.embed_scale.to(hidden_states.dtype)
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual, context)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class Gemma3ForCausalLM(nn.Module):
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
        self.model = Gemma3Model(config, tp, backend, max_model_len or config.max_position_embeddings)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tp)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.final_logit_softcapping = config.final_logit_softcapping

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        return self.model(input_ids, positions, context)      # [num_tokens, hidden_size]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden_states)                  # [num_seqs, vocab_size]
        if self.final_logit_softcapping is not None:
            cap = self.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits
