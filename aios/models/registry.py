"""Model families: which decoder a checkpoint is, read from its config.json.

A family is two things, both in its own file (aios/models/<family>.py):
- `parse_config(raw, path) -> ModelConfig`: the config.json fields that change the family's math,
  and an error naming any such field set to something the family does not implement;
- its model class, built from the shared layers (aios/layers: attention with its backend, TP-aware
  linear layers, norms, RoPE, the MLP) as `cls(config, tp, backend, max_model_len)`, offering
  `forward(input_ids, positions, context)`, `compute_logits(hidden_states)` and
  `packed_modules_mapping` (checkpoint names -> fused modules, for aios/utils/loader.py).
A checkpoint names its family by `architectures` (["Qwen3ForCausalLM"]) or else by `model_type`
("qwen3"). Adding a family is its file and one row of FAMILIES. The family modules are imported
only when a checkpoint asks for them (they import torch and the kernels; this file does not).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from aios.config import ModelConfig
    from aios.distributed.tp_group import TPGroup
    from aios.layers.backend import Backend


@dataclass(frozen=True)
class ModelFamily:
    model_type: str                           # config.json "model_type"; ModelConfig.model_type
    architectures: tuple[str, ...]            # config.json "architectures" names
    module: str                               # defines parse_config and the model class
    model_class: str

    def parse_config(self, raw: dict[str, Any], path: str) -> ModelConfig:
        return importlib.import_module(self.module).parse_config(raw, path)

    def model_cls(self) -> type[nn.Module]:
        return getattr(importlib.import_module(self.module), self.model_class)


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("qwen3", ("Qwen3ForCausalLM",), "aios.models.qwen3", "Qwen3ForCausalLM"),
    ModelFamily("llama", ("LlamaForCausalLM",), "aios.models.llama", "LlamaForCausalLM"),
    ModelFamily("qwen2", ("Qwen2ForCausalLM",), "aios.models.qwen2", "Qwen2ForCausalLM"),
    ModelFamily("mistral", ("MistralForCausalLM",), "aios.models.mistral", "MistralForCausalLM"),
    ModelFamily("gemma3_text", ("Gemma3ForCausalLM",), "aios.models.gemma3", "Gemma3ForCausalLM"),
    ModelFamily("qwen3_moe", ("Qwen3MoeForCausalLM",), "aios.models.qwen3_moe", "Qwen3MoeForCausalLM"),
)


def supported() -> str:
    return ", ".join(f"{'/'.join(f.architectures)} (model_type {f.model_type!r})" for f in FAMILIES)


def family_of(raw: dict[str, Any], path: str = "config.json") -> ModelFamily:
    """The family a config.json names: by `architectures` first, else by `model_type`."""
    architectures = raw.get("architectures") or []
    model_type = raw.get("model_type")
    for name in architectures:
        for family in FAMILIES:
            if name in family.architectures:
                if model_type is not None and model_type != family.model_type:
                    raise ValueError(f"{path}: architectures {architectures} is the {family.model_type!r} family "
                                     f"but model_type is {model_type!r}; supported: {supported()}")
                return family
    for family in FAMILIES:
        if model_type == family.model_type:
            return family
    named = [f"architectures {architectures}"] if architectures else []
    if model_type is not None:
        named.append(f"model_type {model_type!r}")
    raise ValueError(f"{path}: {' with '.join(named) or 'a config naming no architectures'} is not supported; "
                     f"supported: {supported()}")


def family_named(model_type: str) -> ModelFamily:
    for family in FAMILIES:
        if family.model_type == model_type:
            return family
    raise ValueError(f"model_type {model_type!r} is not supported; supported: {supported()}")


def build_model(config: ModelConfig, tp: TPGroup | None = None, backend: Backend | None = None,
                max_model_len: int | None = None) -> nn.Module:
    """The family's model for `config`, its layers built with `backend`'s kernels and one RoPE table
    of `max_model_len` rows (default: the checkpoint's max_position_embeddings). Weights are
    uninitialized: load them (aios/utils/loader.py) or fill them (init_dummy_weights)."""
    return family_named(config.model_type).model_cls()(config, tp, backend, max_model_len)
