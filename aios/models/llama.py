"""Llama 3 (3.0 / 3.1 / 3.2 / 3.3) for inference: the plainest decoder, which Qwen2 reuses (lesson 01).

    input_ids -> embed_tokens -> N x DecoderLayer -> norm -> lm_head (last token of each sequence)
    DecoderLayer: RMSNorm -> Attention -> (+residual) RMSNorm -> MLP -> (+residual)
    Attention:   qkv_proj (+bias: Qwen2) -> RoPE (llama3-scaled: 3.1+) -> paged attention -> o_proj
    MLP:         gate_up_proj -> SiLU(gate) * up -> down_proj

It is Qwen3 (models/qwen3.py) without the per-head q/k RMSNorm; the rest is the config: biases
(`ModelConfig.qkv_bias`, `o_proj_bias`, `mlp_bias`: off for Llama 3 as published, q/k/v on for
Qwen2), the RoPE scaling (layers/rotary_embedding.py) and tied embeddings (Llama 3.2 1B/3B). A
one-token step on a backend with `fused_one_row` runs `LlamaDecoderLayer.forward_one_row`, and one with
`silu_in_gemv` SiLU(gate) * up inside the gate_up gemv (`LlamaMLP.forward`), as Qwen3's do.
`parse_config` is the family's half of aios/models/registry.py; `parse_rope` reads RoPE from a
config.json as transformers 4.5x writes it (`rope_theta` + `rope_scaling`) or 5.x (`rope_parameters`).
"""

from __future__ import annotations

import dataclasses
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
from aios.layers.rotary_embedding import RotaryEmbedding, rope_type, scale_inv_freq
from aios.utils.context import Context


def parse_rope(raw: dict[str, Any], path: str, default_theta: float) -> tuple[float, dict | None]:
    """(rope_theta, the scaling dict without rope_theta, or None if unscaled) of a config.json in
    either format; a rope_type aios does not implement, or a scaling dict missing a field, is an
    error naming the field."""
    field = "rope_scaling" if raw.get("rope_scaling") else "rope_parameters"   # as HF 5.x: rope_scaling wins
    rope = raw.get(field) or None
    theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta", default_theta))
    partial = raw.get("partial_rotary_factor", (rope or {}).get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(f"{path}: partial_rotary_factor={partial!r} is not supported (it changes the math "
                         f"and aios rotates the whole head)")
    try:
        scale_inv_freq(torch.ones(1), rope)
    except ValueError as e:
        raise ValueError(f"{path}: {field}={rope!r}: {e}") from e
    if rope_type(rope) == "default":
        return theta, None
    return theta, {k: v for k, v in rope.items() if k != "rope_theta"}     # one form for both formats


def refuse(path: str, family: str, unsupported: dict[str, bool], raw: dict[str, Any]) -> None:
    """An error naming the first config.json field that is set to math aios does not implement."""
    for name, refused in unsupported.items():
        if refused:
            raise ValueError(f"{path}: {name}={raw.get(name)!r} is not supported for {family} (it changes "
                             f"the math and aios does not implement it)")


def parse_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """A Llama config.json: the shared decoder fields, its biases and RoPE scaling, and an error for
    each option that would change the math and is not implemented. (`pretraining_tp` is not one:
    HF splits the same matmuls into slices when it is > 1; the sum is the same.)"""
    refuse(path, "Llama", {"hidden_act": raw.get("hidden_act", "silu") != "silu"}, raw)
    theta, rope = parse_rope(raw, path, default_theta=10000.0)
    config = ModelConfig.from_hf({"max_position_embeddings": 2048, **raw}, path, model_type="llama")
    attention_bias = bool(raw.get("attention_bias"))
    return dataclasses.replace(config, rope_theta=theta, rope_scaling=rope, qkv_bias=attention_bias,
                               o_proj_bias=attention_bias, mlp_bias=bool(raw.get("mlp_bias")))


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding,
                 sliding_window: int | None = None) -> None:
        super().__init__()
        self.head_dim = config.head_dim
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, config.num_attention_heads,
                                          config.num_key_value_heads, bias=config.qkv_bias, tp=tp, backend=backend)
        self.num_heads = self.qkv_proj.num_heads              # per rank
        self.num_kv_heads = self.qkv_proj.num_kv_heads        # per rank
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.o_proj = RowParallelLinear(config.num_attention_heads * self.head_dim, config.hidden_size,
                                        bias=config.o_proj_bias, tp=tp, backend=backend)
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim ** -0.5,
                              rotary_emb, backend, sliding_window=sliding_window)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, context: Context) -> torch.Tensor:
        qkv = self.qkv_proj(hidden_states)                    # [num_tokens, (nh + 2 * nkv) * head_dim]
        return self.forward_from_qkv(positions, qkv, context)

    def forward_from_qkv(self, positions: torch.Tensor, qkv: torch.Tensor, context: Context) -> torch.Tensor:
        """The block after its q/k/v projection (+ bias), as Qwen3Attention.forward_from_qkv."""
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)         # [num_tokens, num_heads, head_dim]
        k = k.view(-1, self.num_kv_heads, self.head_dim)      # [num_tokens, num_kv_heads, head_dim]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        o = self.attn(q, k, v, positions, context)            # no q/k norm: RoPE -> cache -> attention
        return self.o_proj(o.reshape(-1, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2,
                                                       bias=config.mlp_bias, tp=tp, backend=backend)
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias,
                                           tp=tp, backend=backend)
        self.act_fn = SiluAndMul(backend)
        self.silu_in_gemv = backend.silu_in_gemv              # one row: gate_up_proj + act_fn in one kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.silu_in_gemv and x.shape[0] == 1:             # as Qwen3MLP (gate_up's bias added in the kernel)
            return self.down_proj(self.gate_up_proj.forward_then_silu_and_mul(x))
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, rotary_emb: RotaryEmbedding,
                 sliding_window: int | None = None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, tp, backend, rotary_emb, sliding_window)
        self.mlp = LlamaMLP(config, tp, backend)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)
        self.fuse_one_row = backend.fused_one_row         # one-token steps go to forward_one_row

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
        """forward for one token, fused kernels: the norms and the SiLU inside the matmuls after them
        (as Qwen3DecoderLayer.forward_one_row; the linear layers add their biases after the kernel)."""
        attn, mlp = self.self_attn, self.mlp
        qkv, residual = attn.qkv_proj.forward_after_norm(self.input_layernorm, hidden_states, residual)
        hidden_states = attn.forward_from_qkv(positions, qkv, context)
        gate_up, residual = mlp.gate_up_proj.forward_after_norm(self.post_attention_layernorm, hidden_states,
                                                                residual)
        return mlp.down_proj.forward_after_silu_and_mul(gate_up), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend, max_model_len: int) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        # one cos/sin table for every layer, as long as the longest sequence the engine runs
        self.rotary_emb = RotaryEmbedding(config.head_dim, max_model_len, config.rope_theta, config.rope_scaling)
        window = config.sliding_window            # Mistral's, in every layer; None: full attention
        if window is not None and window >= max_model_len:   # no sequence is long enough to leave it
            window = None
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, tp, backend, self.rotary_emb, window)
                                     for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, backend)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)          # [num_tokens, hidden_size]
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual, context)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class LlamaForCausalLM(nn.Module):
    # checkpoint name -> (fused module name, shard id); biases follow their weights' names
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
        self.model = LlamaModel(config, tp, backend, max_model_len or config.max_position_embeddings)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tp)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: Context) -> torch.Tensor:
        return self.model(input_ids, positions, context)      # [num_tokens, hidden_size]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)                    # [num_seqs, vocab_size]
