"""The oracle of every model family, shared by tests/test_family_*.py: HF's own model of the
checkpoint's family (AutoModelForCausalLM, fp32), its logits and greedy tokens, the engine
schedules that must not change them, and config.json rewritten as the other transformers writes it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from test_model_vs_hf import all_token_logits

from aios import LLM
from helpers import greedy, hf_model, random_prompts
from helpers import hf_greedy as _hf_greedy

MAX_TOKENS = 16
PROMPT_LENS = [3, 9, 30, 50, 70, 17]          # one token to several 16-token blocks
LOGIT_PROMPT_LENS = [1, 5, 16, 17, 40, 70]

# (Config fields, what the schedule exercises); each must give HF's greedy tokens
SCHEDULES = {
    "small-blocks": dict(kvcache_block_size=16),
    "chunked-prefill": dict(max_num_batched_tokens=7, kvcache_block_size=16),   # chunks off block edges
    "preemption": dict(num_kvcache_blocks=8, kvcache_block_size=16),          # tiny pool
    "sync": dict(async_scheduling=False, kvcache_block_size=16),
    "sync-preemption": dict(async_scheduling=False, num_kvcache_blocks=8, kvcache_block_size=16),
}

# on a GPU: the Triton kernels, CUDA graphs, async scheduling; a small pool unless the schedule sets one
GPU_KWARGS = dict(device="cuda", dtype="float32", max_model_len=512, num_kvcache_blocks=64)


def prompts(lengths: list[int] = PROMPT_LENS, seed: int = 11) -> list[list[int]]:
    return random_prompts(512, lengths, seed=seed)






def max_logit_error_vs_hf(model_dir: str, lengths: list[int] = LOGIT_PROMPT_LENS, **llm_kwargs) -> float:
    """Largest |ours - HF| over every token's fp32 logits, the prompts prefilled in one batch."""
    batch = prompts(lengths, seed=1)
    llm = LLM(model_dir, device="cpu", dtype="float32", kvcache_block_size=16, **llm_kwargs)
    ours, model = all_token_logits(llm, batch), hf_model(model_dir)
    with torch.no_grad():
        return max((mine - model(torch.tensor([p])).logits[0]).abs().max().item() for p, mine in zip(batch, ours))


def engine_greedy(model_dir: str, prompts: list[list[int]], max_tokens: int = MAX_TOKENS, **llm_kwargs):
    return greedy(LLM(model_dir, device="cpu", dtype="float32", **llm_kwargs), prompts, max_tokens)


def config_variant(src: str, dst: str, edit: Callable[[dict[str, Any]], None]) -> str:
    """A copy of checkpoint `src` at `dst` whose config.json `edit` has rewritten in place."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    edit(cfg)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return dst


def as_transformers_4x(cfg: dict[str, Any]) -> None:
    """config.json as transformers 4.5x writes it: `rope_theta` and `rope_scaling` (null when
    unscaled) at the top level, `torch_dtype`; 5.x writes one `rope_parameters` dict and `dtype`."""
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    cfg["transformers_version"] = "4.53.2"


def hf_greedy(model_dir: str, prompts: list[list[int]], max_new_tokens: int = MAX_TOKENS) -> list[list[int]]:
    """helpers.hf_greedy with this module's MAX_TOKENS as the default length."""
    return _hf_greedy(model_dir, prompts, max_new_tokens)
