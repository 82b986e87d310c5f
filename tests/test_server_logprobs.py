"""aios/server/logprobs.py and choices.py on synthetic scores: OpenAI's two logprobs formats, vLLM's
prompt_logprobs, echo, and streamed chunks that merge to the whole response.

- A token's `bytes` are its real bytes: a text's tokens' bytes join to the text's UTF-8, even
  where one character spans tokens (whose own texts decode to "\\ufffd").
- Chat: one content entry per output token, its top_logprobs exactly the top-N, most likely first.
- Completions: tokens / token_logprobs / top_logprobs (top-N plus the scored token) / text_offset,
  the offsets running on across a stream's chunks; echo puts the prompt's tokens first, the very
  first with None.
- A stream's chunks of a choice merge to what the whole response says; -inf is sent as -9999.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import pytest

pytest.importorskip("pydantic")

from aios.server.choices import RequestOutputs  # noqa: E402
from aios.server.logprobs import (
    NEG_INF_LOGPROB,
    CompletionLogprobs,
    TokenTexts,
    chat_content,
    vllm_prompt_logprobs,  # noqa: E402
)
from aios.server.stream import Delta  # noqa: E402
from aios.server.tool_calls import HermesToolParser  # noqa: E402


class TokenLogprobs(NamedTuple):              # the engine's form (aios.layers.logprobs.TokenLogprobs)
    token_ids: list[int]
    logprobs: list[float]
    rank: int


@pytest.fixture(scope="module")
def texts(tiny_ckpt) -> TokenTexts:
    from transformers import AutoTokenizer
    return TokenTexts(AutoTokenizer.from_pretrained(tiny_ckpt))


def random_scores(token_id: int, top_n: int, vocab: int, rng: random.Random) -> TokenLogprobs:
    """The scored token and a top-N, most likely first (the scored token may be among them)."""
    top = rng.sample(range(vocab), top_n)
    logprobs = sorted((math.log(rng.random() + 1e-9) for _ in range(top_n)), reverse=True)
    own = logprobs[top.index(token_id)] if token_id in top else min(logprobs, default=0.0) - rng.random()
    rank = top.index(token_id) + 1 if token_id in top else top_n + rng.randint(1, 50)
    return TokenLogprobs([token_id, *top], [own, *logprobs], rank)


def test_token_bytes_join_to_the_texts_utf8(texts):
    text = "ünïcödé 😀 中文, plain words and <|im_end|>"
    ids = texts.tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(bytes(texts.bytes(t)) for t in ids) == text.encode("utf-8")
    assert any("\ufffd" in texts.text(t) for t in ids)      # some token holds part of a character


def test_chat_entries_hold_each_token_and_exactly_its_top_n(texts):
    rng = random.Random(0)
    ids = texts.tokenizer.encode("The quick brown dog", add_special_tokens=False)
    scores = [random_scores(t, 5, 512, rng) for t in ids]
    entries = chat_content(scores, 3, texts)
    assert [e["token"] for e in entries] == [texts.text(t) for t in ids]
    for e, s in zip(entries, scores):
        assert e["logprob"] == s.logprobs[0] and e["bytes"] == texts.bytes(s.token_ids[0])
        assert [t["token"] for t in e["top_logprobs"]] == [texts.text(t) for t in s.token_ids[1:4]]
        assert [t["logprob"] for t in e["top_logprobs"]] == sorted(s.logprobs[1:4], reverse=True)


def test_completion_logprobs_offsets_run_on_across_chunks(texts):
    rng = random.Random(1)
    ids = texts.tokenizer.encode("Once upon a time there was a fox", add_special_tokens=False)
    scores = [random_scores(t, 2, 512, rng) for t in ids]
    builder = CompletionLogprobs(texts, 2)
    first, second = builder.piece(ids[:3], scores[:3]), builder.piece(ids[3:], scores[3:])
    offsets = first["text_offset"] + second["text_offset"]
    pieces = [texts.text(t) for t in ids]
    assert offsets == [sum(map(len, pieces[:i])) for i in range(len(ids))]
    for top, s, piece in zip(first["top_logprobs"] + second["top_logprobs"], scores, pieces):
        assert top[piece] == s.logprobs[0] or piece in {texts.text(t) for t in s.token_ids[1:]}
        assert len(top) <= 3                            # top-2 and the scored token


def test_minus_infinity_is_sent_as_minus_9999(texts):
    s = TokenLogprobs([5, 6], [-math.inf, -0.1], 300)
    assert chat_content([s], 1, texts)[0]["logprob"] == NEG_INF_LOGPROB
    assert CompletionLogprobs(texts, 1).piece([5], [s])["token_logprobs"] == [NEG_INF_LOGPROB]


def test_vllm_prompt_logprobs_format(texts):
    s = TokenLogprobs([7, 9, 7], [-2.0, -0.5, -2.0], 2)
    assert vllm_prompt_logprobs([None, s], texts) == [None, {
        "7": {"logprob": -2.0, "rank": 2, "decoded_token": texts.text(7)},
        "9": {"logprob": -0.5, "rank": 1, "decoded_token": texts.text(9)}}]


def deltas_of(ids: list[int], scores: list, texts: TokenTexts, prompt_scores=None, cut: int = 2) -> list[Delta]:
    """A choice's Deltas as the engine loop sends them: `cut` tokens each, the text of those tokens."""
    out = []
    for i in range(0, len(ids), cut):
        last = i + cut >= len(ids)
        out.append(Delta(0, texts.decode(ids[i:i + cut]), ids[i:i + cut], "stop" if last else None,
                         logprobs=scores[i:i + cut], prompt_logprobs=prompt_scores if i == 0 else None))
    return out


@pytest.mark.parametrize("chat", [False, True])
def test_a_streams_chunks_merge_to_the_whole_choice(texts, chat):
    rng = random.Random(2)
    ids = texts.tokenizer.encode("An inference engine schedules requests", add_special_tokens=False)
    scores = [random_scores(t, 2, 512, rng) for t in ids]
    outputs = RequestOutputs(chat, texts, logprobs=2)
    choice = outputs.choice(0)
    chunks = [choice.chunk(d) for d in deltas_of(ids, scores, texts)]
    merged = choice.merged()
    assert merged["content"] == "".join(c.content for c in chunks) == texts.decode(ids)
    if chat:
        assert merged["logprobs"]["content"] == chat_content(scores, 2, texts)
    else:
        assert merged["logprobs"] == CompletionLogprobs(texts, 2).piece(ids, scores)
    assert merged["finish_reason"] == "stop"


def test_echo_puts_the_prompt_and_its_scores_first(texts):
    rng = random.Random(3)
    prompt = texts.tokenizer.encode("The king said", add_special_tokens=False)
    ids = texts.tokenizer.encode(" to the queen", add_special_tokens=False)
    prompt_scores = [None] + [random_scores(t, 1, 512, rng) for t in prompt[1:]]
    scores = [random_scores(t, 1, 512, rng) for t in ids]
    outputs = RequestOutputs(False, texts, logprobs=1, echo_texts=["The king said"], echo_logprobs=True,
                             prompt_token_ids=[prompt])
    choice = outputs.choice(0)
    for d in deltas_of(ids, scores, texts, prompt_scores):
        choice.chunk(d)
    merged = choice.merged()
    assert merged["content"] == "The king said" + texts.decode(ids)
    lp = merged["logprobs"]
    assert lp["tokens"] == [texts.text(t) for t in prompt + ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == [s.logprobs[0] for s in prompt_scores[1:] + scores]
    assert lp["text_offset"][len(prompt)] == sum(len(texts.text(t)) for t in prompt)


def test_a_choice_that_calls_a_tool_finishes_with_tool_calls(texts):
    outputs = RequestOutputs(True, texts, new_tool_parser=HermesToolParser)
    choice = outputs.choice(0)
    choice.chunk(Delta(0, '<tool_call>\n{"name": "f", "arguments": {"x": 1}}', [1]))
    last = choice.chunk(Delta(0, "\n</tool_call>", [2], "stop"))
    assert last.finish_reason == "tool_calls"
    merged = choice.merged()
    assert merged["content"] is None and merged["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
