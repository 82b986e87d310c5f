"""Logprobs and prompt logprobs are log_softmax of HuggingFace's fp32 logits (the model's raw
distribution), under every schedule: chunked prefill, preemption, async scheduling on and off."""

import pytest
from logits_oracle import check_logprobs_against_hf

from aios import LLM, SamplingParams
from helpers import assert_no_leaked_blocks, hf_model, random_prompts

PROMPT_LENS = [3, 9, 30, 50, 70, 17]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def hf(tiny_ckpt):
    return hf_model(tiny_ckpt)


SCHEDULES = [
    dict(),
    dict(async_scheduling=False),
    dict(max_num_batched_tokens=7, kvcache_block_size=16),                # chunked prefill, off block edges
    dict(num_kvcache_blocks=8, kvcache_block_size=16),                    # preemption
    dict(num_kvcache_blocks=6, kvcache_block_size=16, max_num_batched_tokens=9, async_scheduling=False),
]


@pytest.mark.parametrize("kwargs", SCHEDULES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_logprobs_and_prompt_logprobs_equal_hf_log_softmax(tiny_ckpt, hf, kwargs):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", **kwargs)
    prompts = random_prompts(512, PROMPT_LENS, seed=5)
    greedy = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=4, prompt_logprobs=3)
    sampled = SamplingParams(temperature=1.0, seed=7, max_tokens=MAX_TOKENS, logprobs=2, ignore_eos=True)
    plain = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    params = [greedy, sampled, plain, greedy, sampled, greedy]
    outs = llm.generate(prompts, params, use_tqdm=False)
    for out, p in zip(outs, params):
        if p.logprobs is None:
            assert out["logprobs"] is None and out["prompt_logprobs"] is None and out["cumulative_logprob"] is None
        else:
            check_logprobs_against_hf(hf, out, p)
    if "num_kvcache_blocks" in kwargs:
        assert sum(o["metrics"]["num_preemptions"] for o in outs) > 0, "the pool was meant to preempt"
    assert_no_leaked_blocks(llm)


def test_logprobs_zero_gives_the_sampled_tokens_own_score_only(tiny_ckpt, hf):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    out = llm.generate(random_prompts(512, [11], seed=3), SamplingParams(temperature=0, max_tokens=6, logprobs=0,
                                                                        prompt_logprobs=0), use_tqdm=False)[0]
    assert all(len(e) == 1 for e in out["logprobs"]) and all(len(e) == 1 for e in out["prompt_logprobs"][1:])
    check_logprobs_against_hf(hf, out, SamplingParams(temperature=0, max_tokens=6, logprobs=0, prompt_logprobs=0))


def test_prompt_logprobs_request_takes_no_prefix_cache_hit_and_others_still_do(tiny_ckpt, hf):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    prompt = random_prompts(512, [40], seed=8)[0]
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)    # fills the cache
    params = SamplingParams(temperature=0, max_tokens=4, logprobs=1, prompt_logprobs=2)
    queries = llm.stats()["prefix_cache_queries"]
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    assert out["num_cached_tokens"] == 0
    assert llm.stats()["prefix_cache_queries"] == queries, "a request that skips the cache is no query of it"
    check_logprobs_against_hf(hf, out, params)
    again = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)[0]
    assert again["num_cached_tokens"] == 32
    assert_no_leaked_blocks(llm)


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_a_stop_keeps_logprobs_aligned_with_the_tokens(tiny_ckpt, hf, async_scheduling):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", async_scheduling=async_scheduling)
    prompt = random_prompts(512, [9], seed=9)[0]
    free = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)[0]["token_ids"]
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=2, stop_token_ids=[free[3]])
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    assert out["finish_reason"] == "stop" and out["token_ids"] == free[:free.index(free[3]) + 1]
    check_logprobs_against_hf(hf, out, params)


def test_logprobs_beyond_max_logprobs_are_refused_and_the_engine_keeps_serving(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_logprobs=5)
    prompt = random_prompts(512, [5], seed=4)[0]
    for field in ("logprobs", "prompt_logprobs"):
        with pytest.raises(ValueError, match=f"^{field}: 6 .*max_logprobs=5"):
            llm.add_request(prompt, SamplingParams(**{field: 6}))
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=3, logprobs=5), use_tqdm=False)[0]
    assert len(out["logprobs"]) == 3 and all(len(e) >= 5 for e in out["logprobs"])
    assert_no_leaked_blocks(llm)


def test_decoded_token_is_the_tokens_text(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    out = llm.generate(["The quick brown fox"], SamplingParams(temperature=0, max_tokens=3, logprobs=2,
                                                              prompt_logprobs=1), use_tqdm=False)[0]
    for entry in out["logprobs"] + out["prompt_logprobs"][1:]:
        for token_id, lp in entry.items():
            assert lp.decoded_token == llm.tokenizer.decode([token_id])
    ids = LLM(tiny_ckpt, device="cpu", dtype="float32", skip_tokenizer_init=True).generate(
        [out["prompt_token_ids"]], SamplingParams(temperature=0, max_tokens=3, logprobs=2), use_tqdm=False)[0]
    assert all(lp.decoded_token is None for e in ids["logprobs"] for lp in e.values())
