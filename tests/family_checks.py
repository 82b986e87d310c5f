"""Checks every model family's test runs against HuggingFace (fixtures build the checkpoints):
fp32 logits of every prompt token, and greedy tokens under the engine settings that exercise the
KV cache's paths (small blocks, chunked prefill, preemption, sync scheduling, a prefix-cached
second pass)."""

from __future__ import annotations

import torch
from test_model_vs_hf import all_token_logits

from aios import LLM
from helpers import greedy

ENGINE_SETTINGS = {
    "blocks-of-4": dict(kvcache_block_size=4),
    "chunked-prefill": dict(kvcache_block_size=4, max_num_batched_tokens=7),
    "preemption": dict(kvcache_block_size=4, num_kvcache_blocks=24),
    "sync-scheduling": dict(kvcache_block_size=8, async_scheduling=False),
}


def hf_model(model_dir: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def hf_greedy(model_dir: str, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    model = hf_model(model_dir)
    outs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=0)
            outs.append(out[0, len(p):].tolist())
    return outs


def assert_logits_match_hf(model_dir: str, prompts: list[list[int]], atol: float = 1e-4, **llm_kwargs) -> None:
    llm = LLM(model_dir, device="cpu", dtype="float32", **llm_kwargs)
    ours = all_token_logits(llm, prompts)
    hf = hf_model(model_dir)
    with torch.no_grad():
        for p, mine in zip(prompts, ours):
            ref = hf(torch.tensor([p])).logits[0]
            assert (mine - ref).abs().max().item() < atol


def assert_greedy_matches_hf_twice(model_dir: str, prompts: list[list[int]], expected: list[list[int]],
                                   max_tokens: int, **llm_kwargs) -> LLM:
    """The engine's greedy tokens equal HF's, and again on a second pass that hits the prefix cache."""
    llm = LLM(model_dir, device="cpu", dtype="float32", **llm_kwargs)
    assert greedy(llm, prompts, max_tokens) == expected
    assert greedy(llm, prompts, max_tokens) == expected
    assert llm.stats()["prefix_cache_hits"] > 0
    return llm
