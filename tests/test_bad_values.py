"""Values a hostile or careless caller sends: each is refused where it enters with a ValueError (or
TypeError) naming the field, or has a defined meaning; the requests beside it keep their tokens and
no KV block is left used."""

import math

import numpy as np
import pytest

from aios import LLM, SamplingParams
from aios.engine.step_inputs import profile_seq_lens
from aios.sampling_params import StructuredOutputsParams
from helpers import assert_no_leaked_blocks, greedy, random_prompts


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)


@pytest.mark.parametrize("field, value", [
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", 10**400), ("temperature", 1e39),
    ("temperature", True), ("temperature", -0.5), ("temperature", "0.7"),
    ("top_p", float("nan")), ("top_p", 0.0), ("top_p", 1.5), ("top_p", True),
    ("min_p", float("nan")), ("min_p", -1e-9),
    ("top_k", 2.0), ("top_k", True), ("top_k", -2),
    ("max_tokens", True), ("max_tokens", 0), ("n", True), ("n", 0), ("seed", 1.5), ("seed", True),
    ("ignore_eos", "yes"), ("ignore_eos", 1),
    ("stop", 5), ("stop", [""]), ("stop", [5]), ("stop", b"end"),
    ("stop_token_ids", [-1]), ("stop_token_ids", [True]), ("stop_token_ids", "12"),
    ("best_of", 0), ("best_of", True), ("logprobs", -1), ("logprobs", 1.0), ("prompt_logprobs", True),
    ("presence_penalty", 2.5), ("presence_penalty", float("nan")), ("frequency_penalty", -3),
    ("repetition_penalty", 0), ("repetition_penalty", float("inf")), ("logit_bias", [1, 2]),
    ("logit_bias", {"7": 1.0}), ("logit_bias", {7: 101}), ("logit_bias", {True: 1}), ("min_tokens", -1),
    ("min_tokens", 65), ("bad_words", "word"), ("bad_words", [""]), ("include_stop_str_in_output", 1),
    ("structured_outputs", {"json": {}}),
])
def test_a_bad_sampling_value_is_refused_with_its_field_named(field, value):
    with pytest.raises(ValueError, match=rf"^SamplingParams: {field}\b"):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("kwargs", [{}, {"json": {}, "regex": "a"}, {"choice": []}, {"choice": "ab"},
                                    {"choice": [""]}, {"regex": ""}, {"json": 5}, {"json_object": 1}])
def test_a_structured_output_constraint_is_exactly_one_well_formed_field(kwargs):
    with pytest.raises(ValueError, match="structured_outputs"):
        StructuredOutputsParams(**kwargs)


def test_the_edges_of_sampling_values_have_a_defined_meaning():
    assert SamplingParams(temperature=1e-7).temperature == 0.0          # greedy: 1 / T would overflow
    assert SamplingParams(temperature=10**30).temperature == 1e30       # finite: flattens towards uniform
    assert SamplingParams(top_k=2**64).top_k == 2**64                   # >= vocab: off (the engine knows vocab)
    assert SamplingParams(stop=("a", "b")).stop_strings == ["a", "b"]
    assert SamplingParams(top_p=1e-320).top_p > 0                       # kept; the top token always survives


def test_huge_top_k_is_off_and_does_not_fail_the_requests_beside_it(llm):
    prompts = random_prompts(512, [5, 9, 13], seed=1)
    want = llm.generate(prompts, SamplingParams(temperature=0.8, seed=7, max_tokens=8, ignore_eos=True),
                        use_tqdm=False)
    params = [SamplingParams(temperature=0.8, seed=7, max_tokens=8, ignore_eos=True, top_k=k)
              for k in (-1, 2**64, 2**63 + 5)]
    got = llm.generate(prompts, params, use_tqdm=False)
    assert [o["token_ids"] for o in got] == [o["token_ids"] for o in want]
    assert all(o["finish_reason"] == "length" for o in got)
    assert_no_leaked_blocks(llm)


def test_a_top_p_that_rounds_to_zero_in_float32_is_greedy_not_token_zero(llm):
    prompts = random_prompts(512, [7, 11], seed=2)
    want = greedy(llm, prompts, 6, ignore_eos=True)
    got = llm.generate(prompts, SamplingParams(temperature=1.0, top_p=1e-320, max_tokens=6, ignore_eos=True),
                       use_tqdm=False)
    assert [o["token_ids"] for o in got] == want


def test_a_huge_temperature_samples_every_token_range_without_nan(llm):
    prompt = random_prompts(512, [7], seed=3)[0]
    out = llm.generate([prompt], SamplingParams(temperature=1e30, max_tokens=40, ignore_eos=True, seed=0),
                       use_tqdm=False)[0]
    assert len(set(out["token_ids"])) > 20             # close to uniform over 512 tokens: few repeats
    assert all(0 <= t < 512 for t in out["token_ids"])


def test_too_many_or_too_long_stop_strings_are_refused_before_they_cost_anyone(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_stop_strings=4, max_stop_string_len=10)
    with pytest.raises(ValueError, match="^stop .*at most 4"):
        llm.generate(["a"], SamplingParams(stop=["x", "y", "z", "w", "v"]), use_tqdm=False)
    with pytest.raises(ValueError, match="^stop .*at most 10 characters"):
        llm.generate(["a"], SamplingParams(stop=["x" * 11]), use_tqdm=False)
    assert not llm.has_unfinished_requests()


def test_too_many_bad_words_or_logit_bias_entries_are_refused_before_they_cost_anyone(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_bad_words=2, max_logit_bias=3, max_stop_string_len=10)
    with pytest.raises(ValueError, match="^bad_words .*at most 2 words"):
        llm.generate(["a"], SamplingParams(bad_words=["x", "y", "z"]), use_tqdm=False)
    with pytest.raises(ValueError, match="^bad_words .*at most 10 characters"):
        llm.generate(["a"], SamplingParams(bad_words=["x" * 11]), use_tqdm=False)
    with pytest.raises(ValueError, match="^logit_bias .*at most 3 entries"):
        llm.generate(["a"], SamplingParams(logit_bias={1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}), use_tqdm=False)
    out = llm.generate(["a"], SamplingParams(bad_words=["x", "y"], logit_bias={1: 1.0}, max_tokens=4), use_tqdm=False)
    assert len(out[0]["token_ids"]) >= 1 and not llm.has_unfinished_requests()


@pytest.mark.parametrize("prompt, error, match", [
    ("ab\ud800cd", ValueError, "lone surrogate .* at index 2"),
    (b"hello", TypeError, "got a bytes .*decode it"),
    ([1, "2"], TypeError, "got a list of int, str"),
    ([1.0, 2.0], TypeError, "got a list of float"),
    (np.array([1.5]), TypeError, "got a ndarray"),
    ([], ValueError, "the prompt is empty"),
    ([[1], []], ValueError, "empty"),
])
def test_a_malformed_prompt_is_a_clear_error(llm, prompt, error, match):
    with pytest.raises(error, match=match):
        llm.generate(prompt, SamplingParams(max_tokens=2), use_tqdm=False)
    assert not llm.has_unfinished_requests()


def test_token_ids_as_tuple_or_integer_array_are_prompts(llm):
    ids = random_prompts(512, [9], seed=4)[0]
    want = greedy(llm, [ids], 5)
    for form in (tuple(ids), np.array(ids, dtype=np.int32), [np.int64(t) for t in ids]):
        assert [o["token_ids"] for o in llm.generate(form, SamplingParams(temperature=0, max_tokens=5),
                                                      use_tqdm=False)] == want


@pytest.mark.parametrize("messages, match", [
    ([{"role": "user"}], r"messages\[0\] needs a str 'content'"),
    ([{"role": "user", "content": "hi"}, {"content": "x"}], r"messages\[1\] needs a str 'role'"),
    ([{"role": "user", "content": "\udc00"}], r"messages\[0\]\.content is not valid Unicode"),
    ([["user", "hi"]], r"messages\[0\] must be a dict"),
])
def test_a_malformed_chat_message_is_named(llm, messages, match):
    with pytest.raises(ValueError, match=match):
        llm.chat(messages, SamplingParams(max_tokens=2), use_tqdm=False)


def test_n_samples_per_prompt_are_returned_and_independent(llm):
    prompts = random_prompts(512, [6, 10], seed=5)
    outs = llm.generate(prompts, SamplingParams(temperature=1.0, n=3, seed=11, max_tokens=12, ignore_eos=True),
                        use_tqdm=False)
    assert len(outs) == 2 and all(len(o["outputs"]) == 3 for o in outs)
    for o in outs:
        samples = [s["token_ids"] for s in o["outputs"]]
        assert o["token_ids"] == samples[0] and [s["index"] for s in o["outputs"]] == [0, 1, 2]
        assert len({tuple(s) for s in samples}) == 3, "seeded samples j got seed + j: they differ"
    # sample j of a seeded request is the request with seed + j
    alone = llm.generate([prompts[0]], SamplingParams(temperature=1.0, seed=12, max_tokens=12, ignore_eos=True),
                         use_tqdm=False)[0]
    assert alone["token_ids"] == outs[0]["outputs"][1]["token_ids"]
    assert_no_leaked_blocks(llm)


def test_a_failing_stop_check_finishes_only_its_own_request(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    prompts = random_prompts(512, [5, 8, 13], seed=6)
    want = greedy(llm, prompts, 10, ignore_eos=True)
    seqs = [llm.add_request(p, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)) for p in prompts]
    checker = llm.scheduler.stop_checker
    check, bad = checker.check, seqs[1].seq_id

    def check_stop(seq, idx):
        if seq.seq_id == bad and seq.num_output_tokens >= 3:
            raise OverflowError("injected")
        return check(seq, idx)

    checker.check = check_stop
    while llm.has_unfinished_requests():
        llm.step()
    assert seqs[1].finish_reason == "error" and "OverflowError: injected" in seqs[1].error
    assert [seqs[0].output_token_ids, seqs[2].output_token_ids] == [want[0], want[2]]
    assert_no_leaked_blocks(llm)


def test_a_stream_drains_a_sequence_that_finished_in_another_callers_step(llm):
    prompts = random_prompts(512, [6, 9], seed=7)
    short = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    long = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    want = [o["text"] for o in llm.generate(prompts, [short, long], use_tqdm=False)]
    first, second = llm.stream(prompts[0], short), llm.stream(prompts[1], long)
    texts = ["", ""]
    texts[0] += next(first)                       # both are queued before either steps again
    texts[1] += "".join(second)                   # this one's steps finish the short one too
    texts[0] += "".join(first)
    assert texts == want
    assert_no_leaked_blocks(llm)


@pytest.mark.parametrize("budget, max_seqs, max_len", [
    (8192, 8, 512), (8192, 256, 4096), (16384, 1024, 4096), (100, 1, 4096), (7, 3, 5), (4096, 2, 4096),
    (1, 1, 1), (10000, 3, 3000),
])
def test_the_memory_profile_batch_fits_what_the_scheduler_can_schedule(budget, max_seqs, max_len):
    lens = profile_seq_lens(budget, max_seqs, max_len)
    assert sum(lens) <= budget and len(lens) <= max_seqs
    assert all(1 <= n <= max_len for n in lens)
    assert sum(lens) == min(budget, max_seqs * max_len)
    assert len(lens) == math.ceil(sum(lens) / max(lens))          # as few, as long sequences as fit


def test_a_small_max_num_seqs_and_max_model_len_start_up(tiny_ckpt):
    # the GPU crash of issue 15 (a dummy sequence of 4,608 tokens at max_model_len 512) came from
    # the profile batch; the CPU sizes its cache without one, so this checks the engine end to end
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_num_seqs=8, max_model_len=512)
    assert greedy(llm, random_prompts(512, [5], seed=8), 3)
