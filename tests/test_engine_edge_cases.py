"""Engine-loop edge cases around async scheduling: requests that finish at launch or at their first
token, stop strings across token boundaries, a prompt that fills the KV pool, a failing step."""

import pytest

from aios import LLM, SamplingParams
from helpers import assert_no_leaked_blocks, greedy, random_prompts


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_a_prompt_whose_request_finished_at_launch_is_in_the_prefix_cache(tiny_ckpt, async_scheduling):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, async_scheduling=async_scheduling)
    prompt = random_prompts(512, [40], seed=3)[0]
    params = SamplingParams(temperature=0, max_tokens=1)       # released when its only token is launched
    first = llm.generate([prompt], params, use_tqdm=False)[0]
    again = llm.generate([prompt], params, use_tqdm=False)[0]
    assert again["num_cached_tokens"] == 32
    assert again["token_ids"] == first["token_ids"]
    assert_no_leaked_blocks(llm)


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_a_prompt_whose_request_stopped_at_its_first_token_is_in_the_prefix_cache(tiny_ckpt, async_scheduling):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, async_scheduling=async_scheduling)
    prompt = random_prompts(512, [40], seed=3)[0]
    first_token = greedy(llm, [prompt], 1)[0][0]
    llm.block_manager.reset_prefix_cache()
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, stop_token_ids=[first_token])
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    assert out["finish_reason"] == "stop" and out["token_ids"] == [first_token]
    assert llm.generate([prompt], params, use_tqdm=False)[0]["num_cached_tokens"] == 32
    assert_no_leaked_blocks(llm)


def _stop_string_across_a_token_boundary(llm: LLM) -> tuple[list[int], str]:
    """A prompt and a two-character stop string made of the last character of one generated token
    and the first of the next (its first occurrence in the text)."""
    for seed in range(40):
        prompt = random_prompts(512, [6], seed=seed)[0]
        ids = greedy(llm, [prompt], 16, ignore_eos=True)[0]
        texts = [llm.tokenizer.decode(ids[:i], skip_special_tokens=True) for i in range(len(ids) + 1)]
        for k in range(1, len(ids) - 1):
            a, b = texts[k], texts[k + 1]
            if a and len(b) > len(a) and a[-1].isalnum() and b[len(a)].isalnum() and "\ufffd" not in b:
                stop = a[-1] + b[len(a)]
                if texts[-1].find(stop) == len(a) - 1:
                    return prompt, stop
    raise AssertionError("no stop string across a token boundary found")


def test_stream_never_yields_the_start_of_a_stop_string(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    prompt, stop = _stop_string_across_a_token_boundary(llm)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop=stop)
    want = llm.generate([prompt], params, use_tqdm=False)[0]
    assert want["finish_reason"] == "stop"
    assert "".join(llm.stream(prompt, params)) == want["text"]
    assert_no_leaked_blocks(llm)


def test_a_prompt_that_fills_the_pool_exactly_is_accepted_and_runs(tiny_ckpt):
    # the last sampled token never has its K/V written: 32 prompt tokens + 1 output fit 2 blocks of 16
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", num_kvcache_blocks=2, kvcache_block_size=16)
    prompt = random_prompts(512, [32], seed=5)[0]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)[0]
    assert out["finish_reason"] == "length" and len(out["token_ids"]) == 1
    two = llm.generate([prompt[:20], prompt[:17]], SamplingParams(temperature=0, max_tokens=13, ignore_eos=True),
                       use_tqdm=False)
    assert [len(o["token_ids"]) for o in two] == [13, 13]
    assert_no_leaked_blocks(llm)


def test_an_exception_inside_step_leaves_the_engine_serving(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=10)
    prompts = random_prompts(512, [5, 30, 50, 12], seed=5)
    want = greedy(llm, prompts, 20, ignore_eos=True)
    run, calls = llm.model_runner.run, [0]

    def failing_run(batch, inputs=None):
        calls[0] += 1
        if calls[0] == 4:                     # a step with tokens in flight
            raise RuntimeError("injected failure")
        return run(batch, inputs)

    llm.model_runner.run = failing_run
    with pytest.raises(RuntimeError, match="injected"):
        greedy(llm, prompts, 20, ignore_eos=True)
    assert greedy(llm, prompts, 20, ignore_eos=True) == want
    assert_no_leaked_blocks(llm)


def test_close_aborts_queued_requests_refuses_new_ones_and_can_be_called_twice(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=10)
    prompts = random_prompts(512, [5, 30], seed=6)
    seqs = [llm.add_request(p, SamplingParams(temperature=0, max_tokens=8)) for p in prompts]
    llm.step()                                  # one step launched: tokens may be in flight
    llm.close()
    assert all(s.is_finished and s.finish_reason == "abort" for s in seqs)
    assert all(t >= 0 for s in seqs for t in s.token_ids), "a placeholder survived the abort"
    assert not llm.has_unfinished_requests() and llm.block_manager.num_used_blocks == 0
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate(prompts, SamplingParams(max_tokens=2), use_tqdm=False)
    llm.close()
    again = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=10)
    assert greedy(again, prompts, 4)
