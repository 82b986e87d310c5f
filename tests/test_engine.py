"""The engine's scheduling never changes greedy results, never leaks blocks, and refuses bad input."""

import pytest

from aios import LLM, SamplingParams
from helpers import assert_no_leaked_blocks, greedy, hf_greedy, random_prompts

PROMPT_LENS = [3, 9, 30, 50, 70, 17]
MAX_TOKENS = 20


@pytest.fixture(scope="module")
def expected(tiny_ckpt):
    prompts = random_prompts(512, PROMPT_LENS, seed=11)
    return prompts, hf_greedy(tiny_ckpt, prompts, MAX_TOKENS)


@pytest.mark.parametrize("kwargs", [
    dict(kvcache_block_size=1),
    dict(kvcache_block_size=16),
    dict(kvcache_block_size=256),
    dict(max_num_seqs=1),
    dict(static_batching=True, max_num_seqs=4),
    dict(max_num_batched_tokens=7),                            # chunked prefill, chunks off block edges
    dict(max_num_batched_tokens=16, kvcache_block_size=16),    # chunks exactly on block edges
    dict(num_kvcache_blocks=8, kvcache_block_size=16),         # tiny pool: preemption
    dict(num_kvcache_blocks=6, kvcache_block_size=16, max_num_batched_tokens=9),
    dict(async_scheduling=False),
    dict(async_scheduling=False, num_kvcache_blocks=8, kvcache_block_size=16),
    dict(enable_prefix_caching=False, enable_chunked_prefill=False, max_num_batched_tokens=256, max_model_len=256),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_greedy_tokens_equal_hf_under_every_schedule(tiny_ckpt, expected, kwargs):
    prompts, want = expected
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", **kwargs)
    assert greedy(llm, prompts, MAX_TOKENS) == want
    assert_no_leaked_blocks(llm)


def test_tiny_pool_really_preempts(tiny_ckpt, expected):
    prompts, want = expected
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", num_kvcache_blocks=8, kvcache_block_size=16)
    assert greedy(llm, prompts, MAX_TOKENS) == want
    assert llm.stats()["num_preemptions"] > 0


def test_small_budget_mixes_decodes_and_prefill_chunks_in_one_step(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_num_batched_tokens=8)
    short, long = random_prompts(512, [2, 40], seed=2)
    llm.add_request(short, SamplingParams(temperature=0, max_tokens=10))
    llm.step()                                   # prefill of the short prompt
    llm.add_request(long, SamplingParams(temperature=0, max_tokens=4))
    batch = llm.scheduler.schedule()
    assert sorted(batch.num_new_tokens) == [1, 7]     # one decode + a 7-token chunk of the long prompt
    llm.step(batch)


def test_every_bad_input_is_a_clear_error_and_the_engine_keeps_serving(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_model_len=64)
    good = random_prompts(512, [5], seed=4)[0]
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]], use_tqdm=False)
    with pytest.raises(ValueError, match="empty"):
        llm.generate("", use_tqdm=False)
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([list(range(3, 70))], use_tqdm=False)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-0.1)
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=-5)
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate([[1, 2, 99999]], use_tqdm=False)
    # a bad prompt in a batch queues nothing
    with pytest.raises(ValueError):
        llm.generate([good, []], use_tqdm=False)
    assert not llm.scheduler.waiting
    out = llm.generate([good], SamplingParams(temperature=0, max_tokens=5), use_tqdm=False)
    assert len(out[0]["token_ids"]) >= 1
    assert_no_leaked_blocks(llm)


def test_async_and_sync_scheduling_stop_at_the_same_eos(tiny_ckpt):
    prompts = random_prompts(512, [4, 12, 25, 40], seed=13)
    outs = []
    for flag in (False, True):
        llm = LLM(tiny_ckpt, device="cpu", dtype="float32", async_scheduling=flag)
        eos = llm.eos_token_ids[0]
        free = greedy(llm, prompts, 16, ignore_eos=True)
        stop_ids = [f[3] for f in free]                   # each prompt's 4th token ends it
        params = [SamplingParams(temperature=0, max_tokens=16, stop_token_ids=[t]) for t in stop_ids]
        res = llm.generate(prompts, params, use_tqdm=False)
        outs.append([(r["token_ids"], r["finish_reason"]) for r in res])
        assert all(r["token_ids"][-1] in (stop_ids[i], eos) or r["finish_reason"] == "length"
                   for i, r in enumerate(res))
        assert_no_leaked_blocks(llm)
    assert outs[0] == outs[1]


def test_abort_of_a_sequence_in_flight_frees_its_blocks(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", async_scheduling=True)
    a, b = (llm.add_request(p, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
            for p in random_prompts(512, [20, 9], seed=14))
    for _ in range(3):
        llm.step()
    llm.abort_request(a.seq_id)                          # a has a token in flight
    assert a.finish_reason == "abort" and -1 not in a.token_ids
    while llm.has_unfinished_requests():
        llm.step()
    assert b.finish_reason == "length" and len(b.output_token_ids) == 30
    assert_no_leaked_blocks(llm)


def test_a_sequence_that_can_never_fit_the_pool_is_rejected(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", num_kvcache_blocks=2, kvcache_block_size=16)
    with pytest.raises(ValueError, match="KV blocks"):
        llm.generate([list(range(3, 30))], SamplingParams(max_tokens=20), use_tqdm=False)
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
    assert out[0]["finish_reason"] in ("stop", "length")


def test_outputs_come_back_in_input_order_with_their_finish_reasons(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    prompts = random_prompts(512, [40, 3, 20], seed=6)
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (2, 9, 5)]
    outs = llm.generate(prompts, params, use_tqdm=False)
    assert [len(o["token_ids"]) for o in outs] == [2, 9, 5]
    assert [o["prompt_token_ids"] for o in outs] == prompts
    assert all(o["finish_reason"] == "length" for o in outs)


def test_eos_and_stop_token_ids_finish_with_stop(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    prompt = random_prompts(512, [8], seed=8)[0]
    free_run = greedy(llm, [prompt], 12, ignore_eos=True)[0]
    stop_at = free_run[4]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                                stop_token_ids=[stop_at]), use_tqdm=False)[0]
    assert out["finish_reason"] == "stop"
    assert out["token_ids"] == free_run[: free_run.index(stop_at) + 1]


def test_stop_string_cuts_the_text_before_it(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    prompt = random_prompts(512, [8], seed=9)[0]
    full = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)[0]
    text = full["text"]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip(), "need a visible stop string"
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop=stop),
                       use_tqdm=False)[0]
    assert out["finish_reason"] == "stop"
    assert out["text"] == text[: text.find(stop)]
    assert stop not in out["text"]


def test_chat_applies_the_template(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    messages = [{"role": "user", "content": "Once upon a time"}]
    ids = llm.apply_chat_template(messages)
    assert ids[0] == llm.tokenizer.convert_tokens_to_ids("<|im_start|>")
    out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=5), use_tqdm=False)[0]
    assert out["prompt_token_ids"] == ids
    two = llm.chat([messages, messages], SamplingParams(temperature=0, max_tokens=5), use_tqdm=False)
    assert two[0]["token_ids"] == two[1]["token_ids"] == out["token_ids"]


def test_stream_yields_the_same_text_as_generate(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    prompt = random_prompts(512, [6], seed=12)[0]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    pieces = list(llm.stream(prompt, params))
    assert len(pieces) > 1
    assert "".join(pieces) == llm.generate([prompt], params, use_tqdm=False)[0]["text"]
    assert_no_leaked_blocks(llm)
