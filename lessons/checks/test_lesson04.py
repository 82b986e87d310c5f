"""Lesson 04: a KV cache and the prefill/decode loop, against the no-cache loop and HuggingFace."""

import pytest
import torch

from lessons.common import load_module

LESSON = "04"
PROMPT_IDS = [5, 17, 42, 99, 7]


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    return load_module("03_own_the_model/no_cache_loop.py").load_unfused(tiny_ckpt)


def hf_greedy(model_dir: str, ids: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.readme("Build it: KVCache")
def test_kv_cache_returns_every_token_so_far_in_order_per_layer(impl):
    cache = impl.KVCache(2)
    k0, v0 = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    k, v = cache.update(0, torch.arange(3), k0, v0)
    assert torch.equal(k, k0) and torch.equal(v, v0)
    k1, v1 = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    k, v = cache.update(0, torch.tensor([3]), k1, v1)
    assert torch.equal(k, torch.cat([k0, k1])) and torch.equal(v, torch.cat([v0, v1]))
    k, v = cache.update(1, torch.arange(2), k1.repeat(2, 1, 1), v1.repeat(2, 1, 1))
    assert k.shape == (2, 2, 4), "layer 1 holds only what was written to layer 1"


@pytest.mark.readme("Build it: generate_with_cache")
def test_generate_with_cache_gives_the_no_cache_loops_and_hfs_tokens(impl, tiny_ckpt, loaded):
    no_cache = load_module("03_own_the_model/no_cache_loop.py").generate_no_cache(loaded, PROMPT_IDS, 12)[0]
    got = impl.generate_with_cache(loaded, PROMPT_IDS, 12)
    assert got == no_cache
    assert got == hf_greedy(tiny_ckpt, PROMPT_IDS, 12)


@pytest.mark.readme("Build it: generate_with_cache")
def test_prefill_once_then_one_token_per_decode_step(impl, loaded):
    lengths = []
    hook = loaded.model.embed_tokens.register_forward_hook(lambda mod, args, out: lengths.append(len(args[0])))
    try:
        assert len(impl.generate_with_cache(loaded, PROMPT_IDS, 6)) == 6
    finally:
        hook.remove()
    assert lengths == [len(PROMPT_IDS)] + [1] * 5, "positions computed: the prompt once, then 1 per new token"
