"""Issue 20's fields through the real server (create_app over an engine on the tiny checkpoint) equal
what the engine gives for the same SamplingParams (LLM.generate, the oracle here; the engine's own
tests compare it with HF):

- completions logprobs (streamed and not) and echo's prompt logprobs; chat logprobs + top_logprobs
  through the official openai client: the engine's logprobs, token by token.
- each penalty, logit_bias, min_tokens, bad_words: HTTP's greedy tokens are the engine's, and the
  field changes them (else the test would prove nothing).
- response_format json_schema: the output validates (jsonschema); the openai client's
  chat.completions.parse(..., response_format=PydanticModel) parses it.
- tool_choice "required" / a named function: a parsed tool call of a given tool, streamed and not.
- n and best_of: n choices; best_of's are the engine's.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from chat_templates import with_tools_template  # noqa: E402

from aios import LLM, SamplingParams  # noqa: E402
from aios.server import create_app, serve_in_background  # noqa: E402

MAX_MODEL_LEN = 1024
PROMPT = "The quick brown dog"
USER = [{"role": "user", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt, tmp_path_factory) -> str:
    return with_tools_template(tiny_ckpt, str(tmp_path_factory.mktemp("tiny-tools")))


@pytest.fixture(scope="module")
def engine(ckpt):
    llm = LLM(ckpt, device="cpu", dtype="float32", max_model_len=MAX_MODEL_LEN)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def reference(ckpt):
    llm = LLM(ckpt, device="cpu", dtype="float32", max_model_len=MAX_MODEL_LEN)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def url(engine):
    with serve_in_background(create_app(engine, served_model_name="tiny")) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def post(url: str, route: str, body: dict) -> dict:
    response = httpx.post(f"{url}/v1/{route}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def stream_chunks(url: str, route: str, body: dict) -> list[dict]:
    chunks = []
    with httpx.stream("POST", f"{url}/v1/{route}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks


def engine_output(reference: LLM, prompt, **params) -> dict:
    return reference.generate([prompt], SamplingParams(**params), use_tqdm=False)[0]


def chat_prompt(reference: LLM, messages) -> list[int]:
    return reference.apply_chat_template(messages)


# ---- logprobs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_completion_logprobs_are_the_engines(url, reference, stream):
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 3}
    want = engine_output(reference, PROMPT, temperature=0, max_tokens=6, logprobs=3)
    if stream:
        pieces = [c["choices"][0]["logprobs"] for c in stream_chunks(url, "completions", body)
                  if c["choices"][0]["logprobs"]]
        logprobs = {k: [v for p in pieces for v in p[k]] for k in pieces[0]}
    else:
        logprobs = post(url, "completions", body)["choices"][0]["logprobs"]
    tokenizer = reference.tokenizer
    assert logprobs["tokens"] == [tokenizer.decode([t]) for t in want["token_ids"]]
    assert logprobs["token_logprobs"] == pytest.approx([d[t].logprob for d, t in zip(want["logprobs"],
                                                                                     want["token_ids"])], abs=1e-5)
    for top, d in zip(logprobs["top_logprobs"], want["logprobs"]):
        top3 = sorted(d.values(), key=lambda lp: lp.rank)[:3]
        for lp in top3:
            if lp.rank <= 3:
                assert top[lp.decoded_token] == pytest.approx(lp.logprob, abs=1e-5)
    assert logprobs["text_offset"][0] == 0


@pytest.mark.parametrize("route", ["completions", "chat/completions"])
def test_asking_for_logprobs_changes_no_text(url, route):
    """The logprobs path (aios/server/choices.py) writes the same text as the text-only one, streamed and not."""
    body = {"max_tokens": 12, "temperature": 0, "stop": [" the"]}
    body |= {"prompt": PROMPT} if route == "completions" else {"messages": USER}
    asked = {"logprobs": 2} if route == "completions" else {"logprobs": True, "top_logprobs": 2}

    def text_of(b: dict, stream: bool) -> str:
        if not stream:
            choice = post(url, route, b)["choices"][0]
            return choice["text"] if route == "completions" else choice["message"]["content"]
        chunks = [c["choices"][0] for c in stream_chunks(url, route, b) if c["choices"]]
        return "".join(c["text"] if route == "completions" else c["delta"].get("content") or "" for c in chunks)

    plain = text_of(body, False)
    assert plain and all(text_of({**body, **asked}, stream) == plain for stream in (False, True))


def test_echo_scores_the_prompt_as_the_engines_prompt_logprobs(url, reference):
    body = {"prompt": PROMPT, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True}
    got = post(url, "completions", body)["choices"][0]
    want = engine_output(reference, PROMPT, temperature=0, max_tokens=1, logprobs=1, prompt_logprobs=1)
    prompt_ids = want["prompt_token_ids"]
    assert got["text"] == PROMPT + want["text"]
    assert got["logprobs"]["token_logprobs"][0] is None
    prompt_scores = [d[t].logprob for d, t in zip(want["prompt_logprobs"][1:], prompt_ids[1:])]
    assert got["logprobs"]["token_logprobs"][1:len(prompt_ids)] == pytest.approx(prompt_scores, abs=1e-5)
    assert len(got["logprobs"]["tokens"]) == len(prompt_ids) + 1


def test_chat_logprobs_through_the_openai_client_are_the_engines(client, reference):
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=5, temperature=0,
                                           logprobs=True, top_logprobs=2)
    want = engine_output(reference, chat_prompt(reference, USER), temperature=0, max_tokens=5, logprobs=2)
    content = reply.choices[0].logprobs.content
    assert [e.logprob for e in content] == pytest.approx(
        [d[t].logprob for d, t in zip(want["logprobs"], want["token_ids"])], abs=1e-5)
    for entry, d in zip(content, want["logprobs"]):
        assert len(entry.top_logprobs) == 2
        top2 = sorted((lp for lp in d.values() if lp.rank <= 2), key=lambda lp: lp.rank)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx([lp.logprob for lp in top2], abs=1e-5)


# ---- penalties and friends -----------------------------------------------------------------------

PENALTIES = {
    "presence_penalty": ({"presence_penalty": 2.0}, {"presence_penalty": 2.0}),
    "frequency_penalty": ({"frequency_penalty": 2.0}, {"frequency_penalty": 2.0}),
    "repetition_penalty": ({"repetition_penalty": 3.0}, {"repetition_penalty": 3.0}),
}


@pytest.mark.parametrize("field", list(PENALTIES))
def test_a_penalty_changes_tokens_as_the_engines_does(url, reference, field):
    request_fields, params = PENALTIES[field]
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, **request_fields}
    got = post(url, "completions", {**body, "return_token_ids": True})["choices"][0]["token_ids"]
    assert got == engine_output(reference, PROMPT, temperature=0, max_tokens=24, **params)["token_ids"]
    plain = engine_output(reference, PROMPT, temperature=0, max_tokens=24)["token_ids"]
    assert got != plain, f"{field} changed nothing: the test would prove nothing"


def test_min_tokens_holds_off_an_eos_that_logit_bias_makes_certain(url, reference):
    eos = reference.tokenizer.eos_token_id
    body = {"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "logit_bias": {str(eos): 100},
            "return_token_ids": True}
    assert post(url, "completions", body)["choices"][0]["token_ids"] == [eos]
    held = post(url, "completions", {**body, "min_tokens": 4})["choices"][0]
    assert len(held["token_ids"]) == 5 and held["token_ids"][-1] == eos and held["finish_reason"] == "stop"


def test_logit_bias_and_bad_words_take_the_words_out(url, reference):
    plain = engine_output(reference, PROMPT, temperature=0, max_tokens=8)
    first = plain["token_ids"][0]
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "return_token_ids": True}
    biased = post(url, "completions", {**body, "logit_bias": {str(first): -100}})["choices"][0]["token_ids"]
    assert first not in biased
    assert biased == engine_output(reference, PROMPT, temperature=0, max_tokens=8,
                                   logit_bias={first: -100})["token_ids"]
    word = reference.tokenizer.decode([first])
    banned = post(url, "completions", {**body, "bad_words": [word]})["choices"][0]["token_ids"]
    assert banned == engine_output(reference, PROMPT, temperature=0, max_tokens=8, bad_words=[word])["token_ids"]


# ---- n and best_of -------------------------------------------------------------------------------

def served_and_engine_samples(url: str, reference: LLM, **params) -> tuple[list[dict], list[dict]]:
    """The choices of a /v1/completions request for PROMPT (by index), and the engine's outputs for
    the same sampling fields (SamplingParams' names)."""
    body = {"prompt": PROMPT, "temperature": 1.0, "return_token_ids": True, **params}
    choices = sorted(post(url, "completions", body)["choices"], key=lambda c: c["index"])
    return choices, engine_output(reference, PROMPT, temperature=1.0, **params)["outputs"]


def test_n_gives_n_choices_that_are_the_engines(url, reference):
    choices, want = served_and_engine_samples(url, reference, max_tokens=6, seed=7, n=3)
    assert [c["token_ids"] for c in choices] == [o["token_ids"] for o in want]


def test_best_of_returns_the_engines_best_samples(url, reference):
    choices, want = served_and_engine_samples(url, reference, max_tokens=6, seed=3, n=2, best_of=4)
    got = sorted(c["token_ids"] for c in choices)
    assert len(got) == 2 and got == sorted(o["token_ids"] for o in want)


def test_best_of_choices_carry_their_logprobs(url, reference):
    choices, want = served_and_engine_samples(url, reference, max_tokens=5, seed=3, n=2, best_of=3, logprobs=1)
    for choice, output in zip(choices, want):
        assert choice["token_ids"] == output["token_ids"]
        assert choice["logprobs"]["token_logprobs"] == pytest.approx(
            [d[t].logprob for d, t in zip(output["logprobs"], output["token_ids"])], abs=1e-5)


# ---- structured output and tools -----------------------------------------------------------------

ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                                                  "sure": {"type": "boolean"}},
                 "required": ["answer", "sure"], "additionalProperties": False}


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_json_schema_output_validates(url, stream):
    jsonschema = pytest.importorskip("jsonschema")
    body = {"messages": USER, "max_tokens": 60, "temperature": 1.0, "seed": 1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}}
    if stream:
        chunks = stream_chunks(url, "chat/completions", body)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        reason = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    else:
        choice = post(url, "chat/completions", body)["choices"][0]
        text, reason = choice["message"]["content"], choice["finish_reason"]
    assert reason == "stop", text
    jsonschema.validate(json.loads(text), ANSWER_SCHEMA)


def test_the_openai_clients_parse_with_a_pydantic_model(client):
    from typing import Literal

    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: Literal["yes", "no"]
        sure: bool

    completion = client.chat.completions.parse(model="tiny", messages=USER, response_format=Answer,
                                               max_tokens=60, temperature=1.0, seed=2)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer) and parsed.answer in ("yes", "no")


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Paris"]}},
    "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"utc": {"type": "boolean"}}, "required": ["utc"], "additionalProperties": False}}}


def streamed_tool_calls(chunks: list[dict]) -> list[dict]:
    """A stream's delta.tool_calls merged into the message.tool_calls of a whole response."""
    from aios.server.tool_calls import ToolCallDelta, merge_tool_call_deltas
    deltas = [ToolCallDelta(d["index"], d["function"].get("arguments", ""), d.get("id"), d["function"].get("name"))
              for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    return merge_tool_call_deltas(deltas)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
@pytest.mark.parametrize("stream", [False, True])
def test_a_forcing_tool_choice_yields_a_parsed_tool_call(url, tool_choice, stream):
    body = {"messages": USER, "tools": [WEATHER, TIME], "tool_choice": tool_choice, "max_tokens": 80,
            "temperature": 1.0, "seed": 4, "parallel_tool_calls": False}
    if stream:
        chunks = [c for c in stream_chunks(url, "chat/completions", body) if c["choices"]]
        calls, reason = streamed_tool_calls(chunks), chunks[-1]["choices"][0]["finish_reason"]
    else:
        choice = post(url, "chat/completions", body)["choices"][0]
        calls, reason = choice["message"].get("tool_calls"), choice["finish_reason"]
        assert choice["message"]["content"] is None
    assert reason == "tool_calls" and len(calls) == 1, calls
    name, arguments = calls[0]["function"]["name"], json.loads(calls[0]["function"]["arguments"])
    if isinstance(tool_choice, dict):
        assert name == "get_time"
    assert (name, sorted(arguments)) in [("get_weather", ["city"]), ("get_time", ["utc"])]


@pytest.mark.parametrize("stream", [False, True])
def test_qwen_tool_call_text_becomes_tool_calls(url, stream):
    """tool_choice "auto": a regex makes the model write a Qwen <tool_call> block, the server parses it."""
    body = {"messages": USER, "tools": [WEATHER, TIME], "max_tokens": 80, "temperature": 1.0, "seed": 5,
            "guided_regex": r'Sure\.\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Oslo|Paris)"\}\}'
                            r'\n</tool_call>'}
    if stream:
        chunks = [c for c in stream_chunks(url, "chat/completions", body) if c["choices"]]
        calls, reason = streamed_tool_calls(chunks), chunks[-1]["choices"][0]["finish_reason"]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert all("<tool" not in (c["choices"][0]["delta"].get("content") or "") for c in chunks)
    else:
        choice = post(url, "chat/completions", body)["choices"][0]
        calls, reason, content = choice["message"]["tool_calls"], choice["finish_reason"], choice["message"]["content"]
    assert reason == "tool_calls" and content == "Sure.\n"
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"])["city"] in ("Oslo", "Paris")


def test_streamed_chat_logprobs_equal_the_whole_responses(client):
    kwargs = dict(model="tiny", messages=USER, max_tokens=6, temperature=0, logprobs=True, top_logprobs=1)
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [e for chunk in client.chat.completions.create(**kwargs, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for e in chunk.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole]


def test_each_of_n_choices_carries_its_own_tokens_logprobs(url, reference):
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 1.0, "seed": 9, "n": 2, "logprobs": 0,
            "return_token_ids": True}
    choices = sorted(post(url, "completions", body)["choices"], key=lambda c: c["index"])
    want = engine_output(reference, PROMPT, temperature=1.0, seed=9, n=2, max_tokens=4, logprobs=0)["outputs"]
    for choice, output in zip(choices, want):
        assert choice["token_ids"] == output["token_ids"]
        assert choice["logprobs"]["token_logprobs"] == pytest.approx(
            [d[t].logprob for d, t in zip(output["logprobs"], output["token_ids"])], abs=1e-5)


def test_the_openai_clients_parse_with_a_pydantic_function_tool(client):
    from typing import Literal

    from pydantic import BaseModel

    class GetWeather(BaseModel):
        city: Literal["Oslo", "Paris"]

    completion = client.chat.completions.parse(
        model="tiny", messages=USER, tools=[openai.pydantic_function_tool(GetWeather)], max_tokens=60,
        tool_choice={"type": "function", "function": {"name": "GetWeather"}}, temperature=1.0, seed=6)
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "GetWeather" and isinstance(call.function.parsed_arguments, GetWeather)
