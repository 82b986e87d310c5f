"""The oracle: aios's Qwen3 must compute what HuggingFace's Qwen3ForCausalLM computes."""

import numpy as np
import pytest
import torch

from aios import LLM
from aios.engine.sequence import Sequence
from aios.engine.step_inputs import build_step_inputs
from aios.sampling_params import SamplingParams
from helpers import greedy, hf_greedy, random_prompts


def all_token_logits(llm: LLM, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Prefill every prompt in one batch and return the logits of every token."""
    runner, bs = llm.model_runner, llm.config.kvcache_block_size
    seqs = [Sequence(i, p, SamplingParams(), bs) for i, p in enumerate(prompts)]
    for s in seqs:
        assert llm.block_manager.allocate(s, len(s)) == len(s)
    lens = np.array([len(p) for p in prompts])
    width = max(len(s.block_table) for s in seqs)
    tables = np.full((len(seqs), width), -1, dtype=np.int32)
    for i, s in enumerate(seqs):
        tables[i, : len(s.block_table)] = s.block_table
    ids = np.concatenate([np.array(p) for p in prompts]).astype(np.int64)
    inputs = build_step_inputs(ids, np.zeros(len(seqs), np.int64), lens, tables, np.arange(len(ids)), runner.block_size)
    logits = runner.execute(inputs)
    for s in seqs:
        llm.block_manager.free(s)
    return list(logits.split(lens.tolist()))


def test_logits_match_hf_in_fp32_for_a_batch_of_different_lengths(tiny_ckpt):
    from transformers import Qwen3ForCausalLM

    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    prompts = random_prompts(512, [1, 5, 16, 17, 40])
    ours = all_token_logits(llm, prompts)
    hf = Qwen3ForCausalLM.from_pretrained(tiny_ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        for p, mine in zip(prompts, ours):
            ref = hf(torch.tensor([p])).logits[0]
            assert (mine - ref).abs().max().item() < 1e-4


def test_greedy_tokens_equal_hf_generate(tiny_ckpt):
    prompts = random_prompts(512, [3, 9, 30, 50, 70])        # short, and spanning several 16-token blocks
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    assert greedy(llm, prompts, 24) == hf_greedy(tiny_ckpt, prompts, 24)


def test_tied_embeddings_and_sharded_checkpoint_load_and_match_hf(tiny_ckpt_tied):
    prompts = random_prompts(512, [4, 20], seed=3)
    llm = LLM(tiny_ckpt_tied, device="cpu", dtype="float32")
    assert llm.model_runner.model.lm_head.weight is llm.model_runner.model.model.embed_tokens.weight
    assert greedy(llm, prompts, 12) == hf_greedy(tiny_ckpt_tied, prompts, 12)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_and_mostly_agrees_with_fp32(tiny_ckpt, dtype):
    prompts = random_prompts(512, [12, 33], seed=5)
    ref = all_token_logits(LLM(tiny_ckpt, device="cpu", dtype="float32"), prompts)
    half = all_token_logits(LLM(tiny_ckpt, device="cpu", dtype=dtype), prompts)
    for a, b in zip(ref, half):
        assert b.dtype == getattr(torch, dtype)
        agree = (a.argmax(-1) == b.float().argmax(-1)).float().mean().item()
        assert agree > 0.8
