"""Checks every model family's test runs against HuggingFace (fixtures build the checkpoints):
fp32 logits of every prompt token, and greedy tokens under the engine settings that exercise the
KV cache's paths (small blocks, chunked prefill, preemption, sync scheduling, a prefix-cached
second pass)."""

from __future__ import annotations

import numpy as np
import torch
from test_model_vs_hf import all_token_logits

from aios import LLM
from aios.engine.sequence import Sequence
from aios.engine.step_inputs import build_step_inputs
from aios.sampling_params import SamplingParams
from helpers import greedy, hf_greedy, hf_model  # noqa: F401 (hf_greedy: re-exported to the family tests)

ENGINE_SETTINGS = {
    "blocks-of-4": dict(kvcache_block_size=4),
    "chunked-prefill": dict(kvcache_block_size=4, max_num_batched_tokens=7),
    "preemption": dict(kvcache_block_size=4, num_kvcache_blocks=24),
    "sync-scheduling": dict(kvcache_block_size=8, async_scheduling=False),
}






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


def decode_step_logits(llm: LLM, prompts: list[list[int]], prefill_len: int) -> torch.Tensor:
    """Prefill the first prefill_len tokens of each (equal-length) prompt, then feed the rest one
    token per sequence per step (decode steps: the decode kernel); [num_seqs, steps, vocab]."""
    runner, bs = llm.model_runner, llm.config.kvcache_block_size
    seqs = [Sequence(i, p, SamplingParams(), bs) for i, p in enumerate(prompts)]
    for s in seqs:
        assert llm.block_manager.allocate(s, len(s)) == len(s)
    tables = np.array([s.block_table for s in seqs], dtype=np.int32)
    n = len(prompts)
    ids = np.array([t for p in prompts for t in p[:prefill_len]], dtype=np.int64)
    runner.execute(build_step_inputs(ids, np.zeros(n, np.int64), np.full(n, prefill_len), tables,
                                     np.arange(1, n + 1) * prefill_len - 1, bs))
    steps = []
    for pos in range(prefill_len, len(prompts[0])):
        ids = np.array([p[pos] for p in prompts], dtype=np.int64)
        inputs = build_step_inputs(ids, np.full(n, pos, np.int64), np.ones(n, np.int64), tables, np.arange(n), bs)
        assert not inputs.is_prefill
        steps.append(runner.execute(inputs))
    for s in seqs:
        llm.block_manager.free(s)
    return torch.stack(steps, dim=1)


def assert_decode_logits_match_hf(model_dir: str, prompts: list[list[int]], prefill_len: int,
                                  atol: float = 1e-4, **llm_kwargs) -> None:
    llm = LLM(model_dir, device="cpu", dtype="float32", **llm_kwargs)
    ours = decode_step_logits(llm, prompts, prefill_len)
    with torch.no_grad():
        ref = hf_model(model_dir)(torch.tensor(prompts)).logits[:, prefill_len:]
    assert (ours - ref).abs().max().item() < atol


def assert_gpu_greedy_matches_hf(model_dir: str, prompts: list[list[int]], expected: list[list[int]],
                                 max_tokens: int) -> None:
    """On CUDA: Triton kernels, CUDA graphs and async scheduling, fp32, under chunked prefill and
    preemption, then a prefix-cached second pass; and CUDA-graph output equals eager output."""
    kw = dict(device="cuda", dtype="float32", kvcache_block_size=16, max_model_len=512)
    # 10 blocks of 16 for prompts of 3..61 tokens + 16 outputs (16 blocks together): it must preempt
    # Block counts are given, not profiled: the profile counts every tensor this process holds, and
    # the GPU suite's earlier engines (one process) may still hold their caches.
    with LLM(model_dir, num_kvcache_blocks=10, max_num_batched_tokens=24, **kw) as llm:
        assert llm.model_runner.cuda_graphs.graphs, "no CUDA graphs were captured"
        assert greedy(llm, prompts, max_tokens) == expected
        assert greedy(llm, prompts, max_tokens) == expected
        assert llm.stats()["num_preemptions"] > 0 and llm.stats()["prefix_cache_hits"] > 0
    with LLM(model_dir, num_kvcache_blocks=64, **kw) as graphs, \
            LLM(model_dir, num_kvcache_blocks=64, enforce_eager=True, **kw) as eager:
        assert greedy(graphs, prompts, max_tokens) == greedy(eager, prompts, max_tokens) == expected
