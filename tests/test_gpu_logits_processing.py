"""On a CUDA GPU, with CUDA graphs and async scheduling: logprobs equal HF's log_softmax, each
penalty / logit_bias / min_tokens / bad_words gives HF's greedy tokens, neighbours are untouched."""

import pytest
from logits_oracle import CASES, MAX_TOKENS, PROMPTS, check_logprobs_against_hf, hf_greedy
from transformers.generation.logits_process import MinNewTokensLengthLogitsProcessor, NoBadWordsLogitsProcessor

from aios import LLM, SamplingParams
from aios.layers.logits_processors import bad_words_token_ids
from helpers import assert_no_leaked_blocks, hf_model, random_prompts

pytestmark = pytest.mark.gpu

GPU = dict(device="cuda", dtype="float32", kvcache_block_size=16, max_model_len=512, num_kvcache_blocks=64)


@pytest.fixture(scope="module")
def hf(tiny_ckpt):
    return hf_model(tiny_ckpt)


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    llm = LLM(tiny_ckpt, **GPU)
    assert llm.model_runner.cuda_graphs.graphs and llm.async_scheduling, "graphs and async scheduling are on"
    yield llm
    llm.close()


def mixed_params() -> list[SamplingParams]:
    greedy = SamplingParams(temperature=0, max_tokens=16, logprobs=5, prompt_logprobs=3)
    sampled = SamplingParams(temperature=1.0, seed=3, max_tokens=16, logprobs=2, ignore_eos=True)
    return [greedy, sampled, SamplingParams(temperature=0, max_tokens=16), greedy, sampled]


@pytest.mark.parametrize("kwargs", [{}, dict(num_kvcache_blocks=12, max_num_batched_tokens=24)],
                         ids=["graphs-async", "chunked-preempted"])
def test_gpu_logprobs_equal_hf_log_softmax(tiny_ckpt, hf, kwargs):
    llm = LLM(tiny_ckpt, **{**GPU, **kwargs})
    prompts = random_prompts(512, [3, 30, 9, 70, 120], seed=41)
    params = mixed_params()
    outs = llm.generate(prompts, params, use_tqdm=False)
    for out, p in zip(outs, params):
        if p.logprobs is not None:
            check_logprobs_against_hf(hf, out, p, tol=1e-3)
    if kwargs:
        assert llm.stats()["num_preemptions"] > 0
    assert_no_leaked_blocks(llm)
    llm.close()


def test_gpu_bf16_logprobs_are_close_to_hf_fp32(tiny_ckpt, hf):
    llm = LLM(tiny_ckpt, **{**GPU, "dtype": "bfloat16"})
    prompts = random_prompts(512, [5, 40], seed=42)
    p = SamplingParams(temperature=0, max_tokens=8, logprobs=3, prompt_logprobs=2)
    for out in llm.generate(prompts, p, use_tqdm=False):
        # bf16 weights and activations: the scores are within ~0.05 of fp32 (measured on CPU), tokens may differ
        check_logprobs_against_hf(hf, out, p, tol=0.1)
    llm.close()


def test_gpu_scores_come_back_through_pinned_host_memory(llm):
    seq = llm.add_request(random_prompts(512, [20], seed=43)[0],
                          SamplingParams(temperature=0, max_tokens=4, logprobs=2, prompt_logprobs=1))
    llm.step()
    handle = llm.model_runner.last_handle
    assert handle.tokens_host.is_pinned() and handle.logprobs.token_ids.is_pinned()
    assert handle.prompt_logprobs.logprobs.is_pinned()
    while not seq.is_finished:
        llm.step()
    assert len(seq.output_logprobs) == 4 and len(seq.prompt_logprobs) == 20


@pytest.mark.parametrize("case", list(CASES))
def test_gpu_each_setting_gives_hf_greedy_tokens(llm, hf, case):
    kw, processors = CASES[case]
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, **kw), use_tqdm=False)
    assert [o["token_ids"] for o in outs] == [hf_greedy(hf, p, processors(p)) for p in PROMPTS]
    assert_no_leaked_blocks(llm)


def test_gpu_min_tokens_and_bad_words_give_hf_greedy_tokens(llm, hf):
    prompt = PROMPTS[1]
    free = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=MAX_TOKENS), use_tqdm=False)[0]["token_ids"]
    eos = [free[1]] + llm.eos_token_ids
    got = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, stop_token_ids=[free[1]],
                                                min_tokens=6), use_tqdm=False)[0]["token_ids"]
    assert got == hf_greedy(hf, prompt, [MinNewTokensLengthLogitsProcessor(len(prompt), 6, eos)], eos_token_id=eos)
    words = [llm.tokenizer.decode(free[2:4]), llm.tokenizer.decode([free[0]])]
    bad = bad_words_token_ids(words, llm.tokenizer)
    got = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, bad_words=words),
                       use_tqdm=False)[0]["token_ids"]
    assert got == hf_greedy(hf, prompt, [NoBadWordsLogitsProcessor(bad)])
    assert_no_leaked_blocks(llm)


def test_gpu_settings_never_change_the_neighbours_tokens(llm):
    """Row 0's settings on or off in the same batch (same shapes every step, so the same kernels: a
    batch of one would run gemv, not cuBLAS, and round differently): rows 1-3 keep their tokens."""
    prompts = random_prompts(512, [5, 30, 12, 18], seed=44)
    plain = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    processed = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, repetition_penalty=1.5,
                               frequency_penalty=1.0, logit_bias={5: 5.0}, bad_words=["the"], min_tokens=4,
                               logprobs=3)
    neighbours = [SamplingParams(temperature=1.0, seed=4, max_tokens=16, ignore_eos=True),
                  SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
                  SamplingParams(temperature=0.9, seed=5, max_tokens=16, ignore_eos=True, presence_penalty=1.5)]
    runs = [[o["token_ids"] for o in llm.generate(prompts, [first] + neighbours, use_tqdm=False)]
            for first in (plain, processed)]
    assert runs[0][0] != runs[1][0], "row 0's settings changed nothing: the test would prove nothing"
    assert runs[0][1:] == runs[1][1:]
    assert_no_leaked_blocks(llm)
