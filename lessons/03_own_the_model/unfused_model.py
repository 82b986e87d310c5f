"""Lesson 03's own model: one plain nn.Module per checkpoint tensor, on one device, nothing fused.

    input_ids -> embed_tokens -> N x DecoderLayer -> norm -> lm_head
    DecoderLayer: RMSNorm -> Attention -> (+residual) RMSNorm -> MLP -> (+residual)
    Attention:   q_proj, k_proj, v_proj -> [Qwen3: per-head RMSNorm(q), RMSNorm(k)] -> RoPE -> attention -> o_proj
    MLP:         gate_proj, up_proj -> SiLU(gate) * up -> down_proj

One decoder serves the dense families the engine serves that share it (DESIGN.md, "Model families");
what differs is read from the checkpoint's config (aios's parsers, ModelConfig.from_dir):
    Qwen3   : q_norm and k_norm, one RMSNorm over each head of q and k before RoPE
    Llama 3 : no q/k norm; `llama3` / `linear` RoPE scaling (aios's RotaryEmbedding computes it)
    Qwen2   : Llama with biases on q_proj, k_proj and v_proj (ModelConfig.qkv_bias)
    Mistral : Llama with `sliding_window` (causal_attention in no_cache_loop.py masks it)
Gemma 3 (other norms, GeGLU, two RoPE bases) and Qwen3-MoE (routed experts) are refused by name:
the engine runs them (lesson 06 on; lesson 16 teaches the experts).

Every parameter has the checkpoint's own name and shape (`model.layers.0.self_attn.q_proj.weight`
is a [num_heads * head_dim, hidden] nn.Linear weight), so loading is a copy by name. The engine's
models (aios/models/) compute the same function with q/k/v and gate/up fused into one matmul each
and their weights split across GPUs: lesson 10 fuses, lesson 14 splits.

The forward pass (attention in plain torch, an optional KV cache) is `forward` in no_cache_loop.py;
this file only holds the weights. RMSNorm and the RoPE table are aios's (aios/layers/).
"""

from __future__ import annotations

import torch
from torch import nn

from aios.config import ModelConfig
from aios.layers.layernorm import RMSNorm
from aios.layers.rotary_embedding import RotaryEmbedding

FAMILIES = ("qwen3", "llama", "qwen2", "mistral")     # the model_types this decoder computes exactly


def check_family(config: ModelConfig, model_dir: str) -> None:
    """A ValueError naming the families this model serves, for any other (Gemma 3, Qwen3-MoE)."""
    if config.model_type not in FAMILIES:
        raise ValueError(f"{model_dir}: model_type {config.model_type!r} is not one of the teaching model's "
                         f"families ({', '.join(FAMILIES)}; lessons 03-05); the engine, from lesson 06 on, runs it")


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.q_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=config.o_proj_bias)
        self.q_norm = self.k_norm = None                      # Llama, Qwen2, Mistral: none
        if config.model_type == "qwen3":
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.rotary_emb = rotary_emb                          # the model's one table
        self.scale = self.head_dim ** -0.5


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = Attention(config, rotary_emb)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Model(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.max_position_embeddings, config.rope_theta,
                                          config.rope_scaling)
        self.layers = nn.ModuleList([DecoderLayer(config, self.rotary_emb) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    """The checkpoint's tensors, by name; `compute_logits(hidden)` is the LM head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight          # one matrix, two names
        for p in self.parameters():
            p.requires_grad_(False)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)                    # [num_tokens, vocab_size]


def build(model_dir: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> CausalLM:
    """The module for a checkpoint's config.json, with no weights loaded yet (they are whatever
    nn.Linear's initializer drew: load_model or your load_weights fills them)."""
    config = ModelConfig.from_dir(model_dir)
    check_family(config, model_dir)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return CausalLM(config)
    finally:
        torch.set_default_dtype(old)
