"""Test helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import torch

from aios import LLM, SamplingParams


def hf_model(model_dir: str):
    """HuggingFace transformers' own model of the checkpoint's family (AutoModelForCausalLM), fp32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def hf_greedy(model_dir: str, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """HuggingFace transformers' greedy continuation of each prompt (fp32, one at a time)."""
    model = hf_model(model_dir)
    outs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=0)
            outs.append(out[0, len(p):].tolist())
    return outs


def random_prompts(vocab_size: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab_size, (n,), generator=g).tolist() for n in lengths]


def greedy(llm: LLM, prompts: list[list[int]], max_tokens: int, **kw) -> list[list[int]]:
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw), use_tqdm=False)
    return [o["token_ids"] for o in outs]


def assert_no_leaked_blocks(llm: LLM) -> None:
    bm = llm.block_manager
    assert bm.num_used_blocks == 0, f"{bm.num_used_blocks} blocks still used after the run"
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert not llm.scheduler.running and not llm.scheduler.waiting


def assert_free_list_whole(llm: LLM) -> None:
    """No leaked blocks, every block in the free list once, and each cache entry names its block."""
    bm = llm.block_manager
    assert_no_leaked_blocks(llm)
    assert sorted(bm.free_block_ids) == list(range(bm.num_blocks))
    for h, b in bm.hash_to_block.items():
        assert bm.blocks[b].hash == h


def run_to_end(llm: LLM) -> None:
    """Step until no request is left (at most 10,000 steps)."""
    for _ in range(10_000):
        if not llm.has_unfinished_requests():
            return
        llm.step()
    raise AssertionError("the engine did not finish in 10000 steps")
