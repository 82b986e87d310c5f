"""Load a HuggingFace checkpoint straight from safetensors into the engine's fused modules (lesson 03).

For each tensor in each `*.safetensors` shard: if its name contains a key of the model's
`packed_modules_mapping` (q_proj, gate_proj, ...), it goes into that slice of the fused parameter
(qkv_proj, gate_up_proj) through the parameter's `weight_loader(param, tensor, shard_id)`;
otherwise into the parameter of the same name. Each `weight_loader` also picks this TP rank's
slice. Every parameter must be written exactly once (tied embeddings count as written by either
name); anything else is an error naming the file and the tensor.

A MoE model's `expert_modules_mapping` (checkpoint projection -> (stacked parameter, shard id)) sends
`...experts.{e}.gate_proj.weight` into expert e's slice of `...experts.gate_up_proj` through
`weight_loader(param, tensor, shard_id, expert_id)`; every expert's every projection must be there.
"""

from __future__ import annotations

import glob
import os
import re

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

_EXPERT = re.compile(r"\.experts\.(\d+)\.(\w+)\.weight$")     # model.layers.0.mlp.experts.7.up_proj.weight


def default_weight_loader(param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
    param.data.copy_(loaded_weight)


def load_model(model: nn.Module, model_dir: str) -> None:
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in model directory {model_dir!r}")
    packed = getattr(model, "packed_modules_mapping", {})
    experts = getattr(model, "expert_modules_mapping", {})
    experts_loaded: set[tuple[str, int, int | None]] = set()     # (stacked parameter, expert, shard)
    params = dict(model.named_parameters(remove_duplicate=False))
    # tied parameters appear under two names; count them as one
    canonical = {name: id(p) for name, p in params.items()}
    loaded: set[int] = set()
    for file in files:
        try:
            f = safe_open(file, "pt", device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"cannot read safetensors file {file}: {e}") from e
        with f:
            for name in f.keys():
                target, shard_id = name, None
                for ckpt_key, (fused, sid) in packed.items():
                    if f".{ckpt_key}." in name:
                        target, shard_id = name.replace(f".{ckpt_key}.", f".{fused}."), sid
                        break
                expert_id, expert = None, _EXPERT.search(name) if experts else None
                if expert is not None and expert.group(2) in experts:     # an expert's gate_proj is not the MLP's
                    stacked, shard_id = experts[expert.group(2)]
                    target, expert_id = f"{name[:expert.start()]}.experts.{stacked}", int(expert.group(1))
                    experts_loaded.add((target, expert_id, shard_id))
                param = params.get(target)
                if param is None:
                    if name.endswith("rotary_emb.inv_freq"):
                        continue
                    raise ValueError(f"{file}: tensor {name!r} matches no parameter of the model")
                try:
                    tensor = f.get_tensor(name)
                except Exception as e:  # noqa: BLE001 - safetensors raises several types on corrupt data
                    raise ValueError(f"{file}: cannot read tensor {name!r}: {e}") from e
                loader = getattr(param, "weight_loader", default_weight_loader)
                with torch.no_grad():
                    if expert_id is not None:
                        loader(param, tensor, shard_id, expert_id)
                    elif shard_id is None:
                        loader(param, tensor)
                    else:
                        loader(param, tensor, shard_id)
                loaded.add(canonical[target])
    missing = sorted({n for n, p in params.items() if id(p) not in loaded})
    missing += _missing_experts(params, experts, experts_loaded)
    if missing:
        raise ValueError(f"checkpoint {model_dir!r} lacks tensors for: {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))


def _missing_experts(params: dict[str, nn.Parameter], experts: dict[str, tuple[str, int | None]],
                     loaded: set[tuple[str, int, int | None]]) -> list[str]:
    """Checkpoint names of the expert tensors no file held (a stacked parameter is written slice by slice)."""
    missing = []
    for name, param in params.items():
        prefix, _, stacked = name.rpartition(".experts.")
        for proj, (target, shard_id) in experts.items():
            if prefix and target == stacked:
                missing += [f"{prefix}.experts.{e}.{proj}.weight" for e in range(param.shape[0])
                            if (name, e, shard_id) not in loaded]
    return missing


def init_dummy_weights(model: nn.Module, seed: int = 0) -> None:
    """Random weights with the checkpoint's shapes (benchmarks: speed does not depend on values)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                cpu = torch.empty(p.shape, dtype=torch.float32).uniform_(-0.02, 0.02, generator=gen) \
                    if p.numel() < 2**24 else None
                if cpu is not None:
                    p.copy_(cpu)
                else:                                    # large: draw on the device, seeded there
                    p.uniform_(-0.02, 0.02)
