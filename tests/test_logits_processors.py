"""Penalties, logit_bias, min_tokens and bad_words give HuggingFace's greedy tokens under HF's own
logits processors (presence / frequency: OpenAI's definition written as one), with async scheduling
on and off; a request's settings never change its neighbours' tokens."""

import pytest
import torch
from logits_oracle import CASES, MAX_TOKENS, PROMPTS, hf_greedy
from transformers.generation.logits_process import MinNewTokensLengthLogitsProcessor, NoBadWordsLogitsProcessor

from aios import LLM, SamplingParams
from aios.engine.sequence import PLACEHOLDER, Sequence
from aios.layers.logits_processors import (
    LogitsProcessing,
    apply_logits_processors,
    bad_words_token_ids,
    logits_processor_tensors,
)
from helpers import assert_no_leaked_blocks, hf_model, random_prompts


@pytest.fixture(scope="module")
def hf(tiny_ckpt):
    return hf_model(tiny_ckpt)


@pytest.fixture(scope="module")
def llms(tiny_ckpt):
    return {a: LLM(tiny_ckpt, device="cpu", dtype="float32", async_scheduling=a) for a in (True, False)}


def engine_greedy(llm: LLM, prompts: list[list[int]], **kw) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=kw.pop("max_tokens", MAX_TOKENS), **kw)
    outs = llm.generate(prompts, params, use_tqdm=False)
    assert_no_leaked_blocks(llm)
    return [o["token_ids"] for o in outs]


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_setting_gives_hf_greedy_tokens_under_its_logits_processor(hf, llms, case, async_scheduling):
    kw, processors = CASES[case]
    llm = llms[async_scheduling]
    got = engine_greedy(llm, PROMPTS, **kw)
    assert got != engine_greedy(llm, PROMPTS), f"{case} changed nothing: the test would prove nothing"
    assert got == [hf_greedy(hf, p, processors(p)) for p in PROMPTS]


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_min_tokens_masks_the_stop_tokens_until_enough_are_out(hf, llms, async_scheduling):
    llm = llms[async_scheduling]
    prompt = PROMPTS[1]
    free = engine_greedy(llm, [prompt])[0]
    stop = free[1]                                        # stops the free run at its second token
    got = engine_greedy(llm, [prompt], stop_token_ids=[stop], min_tokens=6)[0]
    assert engine_greedy(llm, [prompt], stop_token_ids=[stop])[0] == free[:2]
    assert stop not in got[:6] and len(got) > 2
    eos = [stop] + llm.eos_token_ids
    want = hf_greedy(hf, prompt, [MinNewTokensLengthLogitsProcessor(len(prompt), 6, eos)], eos_token_id=eos)
    assert got == want


def two_token_word(llm: LLM, tokens: list[int], start: int) -> tuple[int, str]:
    """(i, a string that tokenizes back to tokens[i:i + 2]), the first such i >= start."""
    for i in range(start, len(tokens) - 1):
        word = llm.tokenizer.decode(tokens[i:i + 2])
        if word.strip() and llm.tokenizer.encode(word.lstrip(), add_special_tokens=False) == tokens[i:i + 2]:
            return i, word
    pytest.skip("no two output tokens make a word that tokenizes back to them")


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_bad_words_give_hf_greedy_tokens_under_no_bad_words(hf, llms, async_scheduling):
    """A two-token word: the output runs as before up to its first token, then the second is masked
    (with async scheduling that first token is still in flight when the mask is built). A one-token
    word is masked everywhere."""
    llm = llms[async_scheduling]
    for prompt in PROMPTS:
        free = engine_greedy(llm, [prompt])[0]
        i, word = two_token_word(llm, free, start=1)
        for words in ([word], [llm.tokenizer.decode([free[0]])]):
            bad = bad_words_token_ids(words, llm.tokenizer)
            assert not any(prompt[-len(w) + 1:] == w[:-1] for w in bad if len(w) > 1), "HF would match the prompt"
            got = engine_greedy(llm, [prompt], bad_words=words)[0]
            if len(bad[0]) == 2:
                assert bad[0] == free[i:i + 2] and got[:i + 1] == free[:i + 1] and got[i + 1] != free[i + 1]
            else:
                assert got[0] != free[0]
            assert got == hf_greedy(hf, prompt, [NoBadWordsLogitsProcessor(bad)])
            for w in bad:                                 # the words never appear
                assert not any(got[k:k + len(w)] == w for k in range(len(got)))


def test_bad_words_are_tokenized_with_and_without_a_leading_space(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", num_kvcache_blocks=4)
    tok = llm.tokenizer
    plain, spaced = tok.encode("fox", add_special_tokens=False), tok.encode(" fox", add_special_tokens=False)
    assert plain != spaced
    want = [plain] + ([spaced] if spaced[0] != plain[0] and len(spaced) == len(plain) else [])
    assert bad_words_token_ids(["fox"], tok) == want == bad_words_token_ids(["  fox"], tok)


def test_settings_never_change_the_neighbours_tokens(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_num_batched_tokens=20, kvcache_block_size=16)
    prompts = random_prompts(512, [5, 30, 12, 18], seed=33)
    params = [
        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, repetition_penalty=1.5, frequency_penalty=1.0,
                       logit_bias={5: 5.0}, bad_words=["the"], min_tokens=4),
        SamplingParams(temperature=1.0, seed=4, max_tokens=MAX_TOKENS, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=MAX_TOKENS),
        SamplingParams(temperature=0.9, seed=5, max_tokens=MAX_TOKENS, presence_penalty=1.5, logprobs=2),
    ]
    mixed = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    alone = [llm.generate([p], sp, use_tqdm=False)[0]["token_ids"] for p, sp in zip(prompts, params)]
    assert mixed == alone
    assert_no_leaked_blocks(llm)


def test_bad_values_are_refused_where_they_enter(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", num_kvcache_blocks=16)
    prompt = random_prompts(512, [5], seed=4)[0]
    with pytest.raises(ValueError, match="^logit_bias: token id 512 is outside the vocabulary"):
        llm.add_request(prompt, SamplingParams(logit_bias={3: 1.0, 512: 1.0}))
    with pytest.raises(ValueError, match="^bad_words need a tokenizer"):
        LLM(tiny_ckpt, device="cpu", dtype="float32", num_kvcache_blocks=16,
            skip_tokenizer_init=True).add_request(prompt, SamplingParams(bad_words=["fox"]))
    good = SamplingParams(temperature=0, max_tokens=3)
    with pytest.raises(ValueError, match="logit_bias"):     # one bad request fails alone, before any is queued
        llm.generate([prompt, prompt], [good, SamplingParams(logit_bias={10**6: 1.0})], use_tqdm=False)
    assert len(llm.generate([prompt], good, use_tqdm=False)[0]["token_ids"]) == 3
    assert_no_leaked_blocks(llm)


def test_include_stop_str_in_output_keeps_the_stop_string(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    prompt = random_prompts(512, [9], seed=12)[0]
    free = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)[0]["text"]
    stop = free[4:7]
    cut = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, stop=stop), use_tqdm=False)[0]
    kept = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, stop=stop,
                                                 include_stop_str_in_output=True), use_tqdm=False)[0]
    assert cut["text"] == free[:free.find(stop)]
    assert kept["text"] == free[:free.find(stop) + len(stop)]
    assert "".join(llm.stream(prompt, SamplingParams(temperature=0, max_tokens=12, stop=stop,
                                                     include_stop_str_in_output=True))) == kept["text"]


def reference_row(logits: torch.Tensor, proc, prompt: list[int], output: list[int]) -> torch.Tensor:
    """One row processed by the definitions, token by token (the spec the batched ops must equal)."""
    x = logits.clone()
    for t, b in proc.logit_bias:
        x[t] += b
    if len(output) < proc.min_tokens:
        x[list(proc.min_tokens_stop_ids)] = float("-inf")
    for word in proc.bad_words_token_ids:
        prefix = list(word[:-1])
        if len(prefix) <= len(output) and (not prefix or output[len(output) - len(prefix):] == prefix):
            x[word[-1]] = float("-inf")
    for t in set(prompt + output) if proc.repetition_penalty != 1 else ():
        x[t] = x[t] / proc.repetition_penalty if x[t] > 0 else x[t] * proc.repetition_penalty
    for t in set(output):
        x[t] -= proc.frequency_penalty * output.count(t) + proc.presence_penalty
    return x


def test_batched_processing_equals_the_per_row_definition_with_tokens_in_flight():
    g = torch.Generator().manual_seed(0)
    vocab = 40
    procs = [
        LogitsProcessing(repetition_penalty=1.7, frequency_penalty=0.3, presence_penalty=0.2),
        None,                                                        # a row that asks nothing
        LogitsProcessing(logit_bias=((3, 2.5), (7, -1.0)), min_tokens=9, min_tokens_stop_ids=(0, 5)),
        LogitsProcessing(bad_words_token_ids=((11,), (4, 6), (9, 9, 2)), frequency_penalty=-0.5),
        LogitsProcessing(repetition_penalty=0.6, bad_words_token_ids=((8, 13),)),
    ]
    outputs = [[4, 4, 9, 4], [1, 2], [6, 6, 6], [9, 9, 4], [2, 8]]   # the last token of each is in flight
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (6, 3, 5, 4, 7)]
    seqs, last_tokens = [], []
    for i, (proc, prompt, out) in enumerate(zip(procs, prompts, outputs)):
        seq = Sequence(i, prompt, SamplingParams(), 16, proc)
        seq.token_ids += out[:-1] + [PLACEHOLDER]
        seqs.append(seq)
        last_tokens.append(out[-1])
    row_of = {s.seq_id: len(seqs) - 1 - i for i, s in enumerate(seqs)}   # the previous step's rows, shuffled
    last = torch.tensor([last_tokens[len(seqs) - 1 - r] for r in range(len(seqs))])
    logits = torch.randn(len(seqs), vocab, generator=g) * 3
    t = logits_processor_tensors(seqs, row_of, torch.from_numpy)
    got = apply_logits_processors(logits, t, last)
    assert torch.equal(logits, logits.clone()) and not torch.equal(got, logits)   # a new tensor
    for i, (proc, prompt, out) in enumerate(zip(procs, prompts, outputs)):
        want = logits[i] if proc is None else reference_row(logits[i], proc, prompt, out)
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-6)
    assert logits_processor_tensors([seqs[1]], row_of, torch.from_numpy) is None


def test_min_tokens_holds_back_stop_strings_too(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    decode = llm.tokenizer.decode
    for prompt in random_prompts(512, [9] * 8, seed=12):  # one whose output has a new word among tokens 1-4
        free = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)[0]["token_ids"]
        k = next((k for k in range(1, 5) if decode(free[k:k + 1]).strip()
                  and decode(free[k:k + 1]) not in decode(free[:k])), None)
        if k is not None:
            break
    stop = decode(free[k:k + 1])                          # first appears in the text with token k
    early = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, stop=stop), use_tqdm=False)[0]
    late = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, stop=stop, min_tokens=k + 4),
                        use_tqdm=False)[0]
    assert len(early["token_ids"]) == k + 1 and len(late["token_ids"]) >= k + 4
    assert late["token_ids"] == free[:len(late["token_ids"])]      # a stop string masks no token
