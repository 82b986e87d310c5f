"""Qwen3-MoE for inference: Qwen3 with its MLPs replaced by routed experts (lesson 16).

    DecoderLayer: RMSNorm -> Qwen3Attention -> (+residual) RMSNorm -> SparseMoeBlock -> (+residual)
    SparseMoeBlock: gate (router logits [T, E]) -> softmax, top-k, renormalize (norm_topk_prob)
                    -> the k chosen SiLU-gated experts per token, weighted and summed (FusedMoE)

The attention is Qwen3's, imported (aios/models/qwen3.py: q/k norms, RoPE, paged attention); so is
the dense MLP of the layers that keep one (`mlp_only_layers`, `decoder_sparse_step`). The experts'
checkpoint tensors `mlp.experts.{e}.{gate,up,down}_proj.weight` load straight into two stacked
parameters (`expert_modules_mapping`, aios/utils/loader.py). The router's auxiliary load-balancing
loss (`router_aux_loss_coef`, `output_router_logits`) is for training: inference does not change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aios.config import ModelConfig, MoEConfig
from aios.distributed.tp_group import TPGroup
from aios.kernels.topk_softmax import topk_softmax
from aios.layers.backend import Backend, resolve
from aios.layers.fused_moe import FusedMoE, select_experts
from aios.layers.linear import LinearBase
from aios.models.qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM, Qwen3Model


def parse_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """A Qwen3-MoE config.json (transformers 4.5x writes `num_experts`, 5.x `num_local_experts`): Qwen3's
    fields plus the experts', and an error for each option that would change the math and is not here."""
    rope = raw.get("rope_scaling") or raw.get("rope_parameters") or {}
    unsupported = {
        "attention_bias": bool(raw.get("attention_bias")),
        "use_sliding_window": bool(raw.get("use_sliding_window")),
        "layer_types": any(t != "full_attention" for t in raw.get("layer_types") or []),
        "hidden_act": raw.get("hidden_act", "silu") != "silu",
        "rope_scaling": rope.get("rope_type", rope.get("type")) not in (None, "default"),
        "shared_expert_intermediate_size": bool(raw.get("shared_expert_intermediate_size")),
    }
    for name, refused in unsupported.items():
        if refused:
            value = raw.get(name, rope)
            raise ValueError(f"{path}: {name}={value!r} is not supported for Qwen3-MoE (it changes the math "
                             f"and aios does not implement it)")
    config = ModelConfig.from_hf(raw, path, model_type="qwen3_moe")
    num_experts = raw.get("num_experts", raw.get("num_local_experts"))
    try:
        top_k, width = raw["num_experts_per_tok"], raw["moe_intermediate_size"]
    except KeyError as e:
        raise ValueError(f"{path} lacks the field {e.args[0]!r}") from e
    if not isinstance(num_experts, int) or num_experts < 0:
        raise ValueError(f"{path}: num_experts must be an int >= 0, got {num_experts!r}")
    if num_experts and (not isinstance(top_k, int) or not 1 <= top_k <= num_experts):
        raise ValueError(f"{path}: num_experts_per_tok must be in [1, num_experts={num_experts}], got {top_k!r}")
    step = raw.get("decoder_sparse_step", 1)
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"{path}: decoder_sparse_step must be an int >= 1, got {step!r}")
    dense = raw.get("mlp_only_layers") or []
    if any(not isinstance(i, int) or not 0 <= i < config.num_hidden_layers for i in dense):
        raise ValueError(f"{path}: mlp_only_layers must be layer indices in [0, {config.num_hidden_layers}), "
                         f"got {dense!r}")
    # HF's rule (Qwen3MoeDecoderLayer): experts where the layer is not listed dense and (i + 1) % step == 0
    sparse = tuple(i for i in range(config.num_hidden_layers)
                   if num_experts and i not in dense and (i + 1) % step == 0)
    config.moe = MoEConfig(num_experts, top_k, width, bool(raw.get("norm_topk_prob", False)), sparse)
    return config


class Qwen3MoeSparseMoeBlock(nn.Module):
    def __init__(self, config: ModelConfig, tp: TPGroup, backend: Backend) -> None:
        super().__init__()
        moe = config.moe
        self.top_k, self.norm_topk_prob = moe.num_experts_per_tok, moe.norm_topk_prob
        # the router's rule (a learner's, lesson 16): HF's torch ops, or their one-launch Triton kernel
        self.select_experts = topk_softmax if resolve(backend).fused_kernels else select_experts
        self.gate = LinearBase(config.hidden_size, moe.num_experts, bias=False, tp=None, backend=backend)  # replicated
        self.experts = FusedMoE(moe.num_experts, config.hidden_size, moe.moe_intermediate_size, tp, backend)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        router_logits = self.gate(hidden_states)              # [num_tokens, num_experts]
        topk_weights, topk_ids = self.select_experts(router_logits, self.top_k, self.norm_topk_prob)  # [T, k]
        return self.experts(hidden_states, topk_weights, topk_ids)


class Qwen3MoeModel(Qwen3Model):
    """Qwen3's decoder; each layer's feed-forward block is the experts where HF's rule makes the
    layer sparse (decoder_sparse_step, mlp_only_layers), Qwen3's dense MLP elsewhere."""

    def build_layer(self, config: ModelConfig, layer_idx: int, tp: TPGroup, backend: Backend) -> nn.Module:
        sparse = layer_idx in config.moe.sparse_layers
        mlp = Qwen3MoeSparseMoeBlock(config, tp, backend) if sparse else None
        return Qwen3DecoderLayer(config, tp, backend, self.rotary_emb, mlp)


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    model_cls = Qwen3MoeModel
    # an expert's checkpoint projection -> (stacked parameter of FusedMoE, shard id)
    expert_modules_mapping = {
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
        "down_proj": ("down_proj", None),
    }
