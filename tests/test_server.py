"""The OpenAI-compatible server (lesson 15) keeps serving: real uvicorn on 127.0.0.1, real clients.

- Greedy output through HTTP (completions and chat, streamed and not) equals LLM.generate / chat.
- return_token_ids, and a server without a tokenizer: a choice's token_ids (concatenated over its
  chunks) equal LLM.generate's; text the server cannot tokenize is a 400, and the server goes on.
- 64 concurrent streams, some dropped early: survivors complete and exact, dropped ones aborted,
  no KV block left in use.
- Every bad request gets its status and OpenAI error body, and the next good request succeeds.
- An exception inside the engine step fails its requests with 500; the server goes on.
- SIGTERM stops a server process cleanly (exit status 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

# the server's packages are optional (requirements-server): without them these tests skip
fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from aios import LLM, SamplingParams  # noqa: E402
from aios.server import create_app, serve_in_background  # noqa: E402
from aios.server.__main__ import engine_kwargs, parse_args  # noqa: E402
from helpers import random_prompts  # noqa: E402

MODEL = "tiny"
MAX_MODEL_LEN = 128
PROMPTS = ["Once upon a time there was", "The quick brown dog", "An inference engine schedules",
           "The king said to the queen"]


def make_llm(ckpt: str, **kw) -> LLM:
    return LLM(ckpt, device="cpu", dtype="float32", max_model_len=MAX_MODEL_LEN, **kw)


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    llm = make_llm(tiny_ckpt)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    """A second engine on the same checkpoint: what LLM.generate says, to compare HTTP against."""
    return make_llm(tiny_ckpt)


@pytest.fixture(scope="module")
def url(engine):
    with serve_in_background(create_app(engine, served_model_name=MODEL, max_waiting=256)) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def wait_for_no_used_blocks(engine: LLM, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.block_manager.num_used_blocks and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.block_manager.num_used_blocks == 0, f"{engine.block_manager.num_used_blocks} blocks still used"


def greedy(reference: LLM, prompts, max_tokens: int, **kw) -> list[dict]:
    return reference.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw), use_tqdm=False)


# ---- results equal the offline API -------------------------------------------------------------------


def test_greedy_completions_equal_llm_generate(client, reference):
    want = greedy(reference, PROMPTS, 12)
    got = client.completions.create(model=MODEL, prompt=PROMPTS, max_tokens=12, temperature=0)
    assert [c.index for c in got.choices] == list(range(len(PROMPTS)))
    assert [c.text for c in got.choices] == [w["text"] for w in want]
    assert got.usage.completion_tokens == sum(len(w["token_ids"]) for w in want)
    assert got.usage.prompt_tokens == sum(len(w["prompt_token_ids"]) for w in want)
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_streamed_completion_equals_llm_generate_and_ends_with_usage(client, reference):
    want = greedy(reference, [PROMPTS[0]], 16)[0]
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want["text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == want["finish_reason"]
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == len(want["token_ids"])
    assert chunks[-1].usage.prompt_tokens == len(want["prompt_token_ids"])


def test_token_id_prompt_equals_llm_generate(client, reference):
    ids = reference.tokenize(PROMPTS[1])
    want = greedy(reference, [ids], 10)[0]
    got = client.completions.create(model=MODEL, prompt=ids, max_tokens=10, temperature=0)
    assert got.choices[0].text == want["text"]


def test_chat_streamed_and_not_equal_llm_chat(client, reference):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[2]}]
    want = reference.chat(messages, SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)[0]
    got = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=12, temperature=0)
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want["text"]
    assert got.usage.completion_tokens == len(want["token_ids"])
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want["text"]
    assert chunks[-1].choices[0].finish_reason == want["finish_reason"]


def test_n_seeded_choices_are_independent_samples_of_one_prompt(client, engine, reference):
    before = engine.stats()["num_computed_prompt_tokens"]
    got = client.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=10, temperature=1.0, seed=7, n=3)
    # one request, one prefill: its 3 samples fork from it (the prompt is shorter than a block: no hit)
    assert engine.stats()["num_computed_prompt_tokens"] - before == got.usage.prompt_tokens
    assert [c.index for c in got.choices] == [0, 1, 2]
    wants = [reference.generate(PROMPTS[3], SamplingParams(temperature=1.0, max_tokens=10, seed=7 + j),
                                use_tqdm=False)[0]["text"] for j in range(3)]   # choice j samples with seed + j
    assert [c.text for c in got.choices] == wants
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=10, temperature=1.0, seed=7,
                                            n=3, stream=True))
    assert ["".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == j)
            for j in range(3)] == wants


def test_best_of_returns_the_n_best_choices_and_is_not_streamed(client, url, reference):
    want = reference.generate(PROMPTS[1], SamplingParams(temperature=1.0, max_tokens=8, seed=5, n=2, best_of=4),
                              use_tqdm=False)[0]
    got = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=8, temperature=1.0, seed=5, n=2,
                                    best_of=4)
    assert [c.index for c in got.choices] == [0, 1]
    assert [c.text for c in got.choices] == [o["text"] for o in want["outputs"]]
    assert got.usage.completion_tokens == sum(len(o["token_ids"]) for o in want["outputs"])
    r = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPTS[1], "n": 2, "best_of": 4, "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "best_of"


def test_stop_string_is_never_streamed(client, reference):
    text = greedy(reference, [PROMPTS[0]], 24)[0]["text"]
    i = next(i for i in range(3, len(text) - 1) if text[i:i + 2].isalnum())
    stop = text[i:i + 2]
    want = greedy(reference, [PROMPTS[0]], 24, stop=stop)[0]
    assert want["finish_reason"] == "stop" and stop not in want["text"]
    got = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=24, temperature=0, stop=stop)
    assert got.choices[0].text == want["text"] and got.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=24, temperature=0,
                                            stop=[stop], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want["text"]


# ---- token ids: return_token_ids, and a server without a tokenizer -------------------------------------


def sse_choices(url: str, body: dict, route: str = "completions") -> list[dict]:
    """The choices of every chunk of one streamed request, in order (the usage-only chunk has none)."""
    chunks = []
    with httpx.stream("POST", f"{url}/v1/{route}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: "):]))
    assert all("error" not in c for c in chunks), chunks
    return chunks


def test_return_token_ids_streamed_and_whole_equal_llm_generate(url, reference):
    want = greedy(reference, [PROMPTS[2]], 12, ignore_eos=True)[0]
    body = {"model": MODEL, "prompt": PROMPTS[2], "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    choices = [c["choices"][0] for c in sse_choices(url, {**body, "return_token_ids": True})]
    assert len(choices) == len(want["token_ids"])      # one chunk per step, even where its text is held back
    assert sum((c["token_ids"] for c in choices), []) == want["token_ids"]
    assert "".join(c["text"] for c in choices) == want["text"]
    whole = httpx.post(f"{url}/v1/completions", json={**body, "return_token_ids": True}).json()
    assert whole["choices"][0]["token_ids"] == want["token_ids"] and whole["choices"][0]["text"] == want["text"]
    plain = sse_choices(url, body)
    assert not any("token_ids" in c for chunk in plain for c in chunk["choices"])
    assert "".join(chunk["choices"][0]["text"] for chunk in plain) == want["text"]
    assert "token_ids" not in httpx.post(f"{url}/v1/completions", json=body).json()["choices"][0]


@pytest.mark.parametrize("return_token_ids", [True, False])
def test_stream_interval_sends_every_nth_token_and_loses_none(tiny_ckpt, reference, return_token_ids):
    """stream_interval=3: the first token at once, then chunks of 3 tokens, the rest with the finish."""
    llm = make_llm(tiny_ckpt)
    try:
        with serve_in_background(create_app(llm, served_model_name=MODEL, stream_interval=3)) as base:
            want = greedy(reference, [PROMPTS[2]], 11, ignore_eos=True)[0]
            body = {"model": MODEL, "prompt": PROMPTS[2], "max_tokens": 11, "temperature": 0, "ignore_eos": True,
                    "return_token_ids": return_token_ids}
            choices = [c["choices"][0] for c in sse_choices(base, body)]
    finally:
        llm.close()
    assert "".join(c["text"] for c in choices) == want["text"]
    assert choices[-1]["finish_reason"] == "length"
    if return_token_ids:
        assert [len(c["token_ids"]) for c in choices] == [1, 3, 3, 3, 1]
        assert sum((c["token_ids"] for c in choices), []) == want["token_ids"]
    else:
        assert len(choices) <= 5                   # chunks only where text was due: never one per token


def test_stream_interval_below_one_is_refused():
    with pytest.raises(SystemExit):
        parse_args(["--stream-interval", "0"])


def test_chat_with_return_token_ids_puts_them_on_the_choice(url, reference):
    messages = [{"role": "user", "content": PROMPTS[3]}]
    want = reference.chat(messages, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)[0]
    body = {"model": MODEL, "messages": messages, "max_tokens": 8, "temperature": 0, "return_token_ids": True}
    whole = httpx.post(f"{url}/v1/chat/completions", json=body).json()["choices"][0]
    assert whole["token_ids"] == want["token_ids"] and whole["message"]["content"] == want["text"]
    chunks = sse_choices(url, body, route="chat/completions")
    assert sum((c["choices"][0]["token_ids"] for c in chunks), []) == want["token_ids"]


@pytest.fixture(scope="module")
def no_tokenizer_ckpt(tiny_ckpt, tmp_path_factory) -> str:
    """tiny_ckpt's config.json and weights only: no tokenizer files, as a random-weight benchmark checkpoint."""
    path = tmp_path_factory.mktemp("tiny-no-tokenizer")
    for name in os.listdir(tiny_ckpt):
        if name == "config.json" or name.endswith(".safetensors"):
            shutil.copy(os.path.join(tiny_ckpt, name), path / name)
    return str(path)


@pytest.fixture(scope="module")
def no_tokenizer(no_tokenizer_ckpt):
    """(base URL of a server of a tokenizer-less engine, a second such engine to compare against)"""
    llm, reference = (make_llm(no_tokenizer_ckpt, skip_tokenizer_init=True) for _ in range(2))
    assert llm.tokenizer is None
    try:
        with serve_in_background(create_app(llm, served_model_name=MODEL)) as base:
            yield base, reference
    finally:
        llm.close()
        reference.close()


def test_no_tokenizer_server_streams_token_ids_equal_to_llm_generate(no_tokenizer):
    url, reference = no_tokenizer
    prompt = random_prompts(reference.config.hf_config.vocab_size, [9], seed=3)[0]
    want = greedy(reference, [prompt], 12, ignore_eos=True)[0]
    chunks = sse_choices(url, {"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                               "stream_options": {"include_usage": True}})
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert len(choices) == len(want["token_ids"]) == 12
    assert sum((c["token_ids"] for c in choices), []) == want["token_ids"]
    assert all(c["text"] == "" for c in choices) and choices[-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 12, "total_tokens": 21}


def test_no_tokenizer_server_whole_response_carries_each_choices_token_ids(no_tokenizer):
    url, reference = no_tokenizer
    prompts = random_prompts(reference.config.hf_config.vocab_size, [5, 11], seed=4)
    want = greedy(reference, prompts, 10)
    got = httpx.post(f"{url}/v1/completions", json={"prompt": prompts, "max_tokens": 10, "temperature": 0}).json()
    assert [c["token_ids"] for c in got["choices"]] == [w["token_ids"] for w in want]
    assert [c["finish_reason"] for c in got["choices"]] == [w["finish_reason"] for w in want]
    assert all(c["text"] == "" for c in got["choices"])
    assert got["usage"]["completion_tokens"] == sum(len(w["token_ids"]) for w in want)


NO_TOKENIZER_REFUSALS = {
    "string_prompt": ("completions", {"prompt": "hi"}, "prompt", "send prompts as token ids"),
    "list_of_strings": ("completions", {"prompt": ["hi", "there"]}, "prompt", "send prompts as token ids"),
    "chat": ("chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "messages", "need a tokenizer"),
    "stop_strings": ("completions", {"prompt": [5, 6, 7], "stop": ["x"]}, "stop", "need a tokenizer"),
}


@pytest.mark.parametrize("case", list(NO_TOKENIZER_REFUSALS))
def test_no_tokenizer_server_refuses_text_with_400_and_goes_on(no_tokenizer, case):
    url, _ = no_tokenizer
    route, body, param, words = NO_TOKENIZER_REFUSALS[case]
    response = httpx.post(f"{url}/v1/{route}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"] and "skip_tokenizer_init" in error["message"]
    ok = httpx.post(f"{url}/v1/completions", json={"prompt": [5, 6, 7], "max_tokens": 3, "ignore_eos": True})
    assert ok.status_code == 200 and len(ok.json()["choices"][0]["token_ids"]) == 3


def test_command_line_starts_an_engine_without_tokenizer_and_with_dummy_weights():
    args = parse_args(["--model", "DIR", "--skip-tokenizer-init", "--load-format", "dummy"])
    assert engine_kwargs(args) == {"skip_tokenizer_init": True, "load_format": "dummy"}
    assert engine_kwargs(parse_args([])) == {}


# ---- many clients, some leaving -------------------------------------------------------------------------


async def stream_completion(http: httpx.AsyncClient, url: str, body: dict, leave_after_chunks: int | None):
    """Concatenated text and finish reason of one SSE stream; leaves early after that many text chunks."""
    text, finish_reason, chunks, done = "", None, 0, False
    async with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            choice = json.loads(line[len("data: "):])["choices"][0]
            text += choice["text"]
            finish_reason = choice["finish_reason"] or finish_reason
            chunks += bool(choice["text"])
            if leave_after_chunks is not None and chunks >= leave_after_chunks:
                return None                            # closing the response drops the connection
    assert done
    return text, finish_reason


def test_64_concurrent_streams_some_disconnecting_leave_no_used_blocks(url, engine, reference):
    prompts = [f"{PROMPTS[i % 4]} {i}" for i in range(64)]
    leaving = {i for i in range(64) if i % 4 == 1}
    want = greedy(reference, prompts, 12)
    aborts_before = metric_value(httpx.get(f"{url}/metrics").text, 'finish_reason="abort"')

    async def run_all():
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            return await asyncio.gather(*[
                stream_completion(http, url, {"model": MODEL, "prompt": p, "temperature": 0, "ignore_eos": i in leaving,
                                              "max_tokens": 100 if i in leaving else 12},
                                  leave_after_chunks=1 if i in leaving else None)
                for i, p in enumerate(prompts)])

    results = asyncio.run(run_all())
    for i, (result, w) in enumerate(zip(results, want)):
        if i not in leaving:
            assert result == (w["text"], w["finish_reason"]), f"stream {i}"
    wait_for_no_used_blocks(engine)
    aborts = metric_value(httpx.get(f"{url}/metrics").text, 'finish_reason="abort"') - aborts_before
    assert aborts == len(leaving)                      # each left before its 100 tokens: aborted, not finished


def test_a_client_leaving_a_non_streamed_request_aborts_it(url, engine, monkeypatch):
    run = engine.model_runner.run
    monkeypatch.setattr(engine.model_runner, "run", lambda batch: (time.sleep(0.01), run(batch))[1])
    aborts_before = metric_value(httpx.get(f"{url}/metrics").text, 'finish_reason="abort"')
    with pytest.raises(httpx.ReadTimeout):      # 100 tokens take > 1 s; the client leaves after 0.3 s
        httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 100, "ignore_eos": True}, timeout=0.3)
    wait_for_no_used_blocks(engine)
    assert metric_value(httpx.get(f"{url}/metrics").text, 'finish_reason="abort"') == aborts_before + 1


# ---- bad requests, engine errors, limits -------------------------------------------------------------------


def metric_value(text: str, selector: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if not line.startswith("#") and selector in line)


BAD_REQUESTS = {
    "malformed_json": ("completions", '{"prompt": "hi", ', 400, None),
    "wrong_type": ("completions", {"prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
    "wrong_messages_type": ("chat/completions", {"messages": "hi"}, 400, "messages"),
    "prompt_too_long": ("completions", {"prompt": [5] * 200}, 400, "prompt"),
    "bad_top_p": ("completions", {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    "empty_prompt": ("completions", {"prompt": ""}, 400, "prompt"),
    "unknown_model": ("completions", {"model": "gpt-4", "prompt": "hi"}, 404, "model"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_error_body_and_the_server_goes_on(url, client, case):
    route, body, status, param = BAD_REQUESTS[case]
    kw = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {"json": body}
    response = httpx.post(f"{url}/v1/{route}", **kw)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if case == "prompt_too_long":
        assert "200" in error["message"] and str(MAX_MODEL_LEN) in error["message"]
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).choices[0].finish_reason


def test_engine_step_exception_fails_its_requests_with_500_and_the_server_goes_on(url, client, engine, monkeypatch):
    run = engine.model_runner.run
    calls = []

    def fail_once(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("simulated device error")
        return run(batch)

    monkeypatch.setattr(engine.model_runner, "run", fail_once)
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=30)
    assert response.status_code == 500
    assert "simulated device error" in response.json()["error"]["message"]
    wait_for_no_used_blocks(engine)
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=3).usage.completion_tokens == 3


def test_too_many_waiting_requests_get_429_with_retry_after(tiny_ckpt, url):
    """A second server in the same process: one running sequence, at most one waiting."""
    small = make_llm(tiny_ckpt, max_num_seqs=1)
    run = small.model_runner.run
    small.model_runner.run = lambda batch: (time.sleep(0.02), run(batch))[1]    # 100 tokens take > 2 s
    body = {"prompt": "hi", "max_tokens": 100, "ignore_eos": True, "stream": True}
    try:
        app = create_app(small, served_model_name="tiny-2", max_waiting=1)
        with serve_in_background(app) as url2, httpx.Client(timeout=30) as http:
            with http.stream("POST", f"{url2}/v1/completions", json=body) as running:
                lines = running.iter_lines()            # kept: a closed iterator closes the connection
                next(line for line in lines if line.startswith("data: "))                 # it runs
                with http.stream("POST", f"{url2}/v1/completions", json=body) as waiting:
                    assert waiting.status_code == 200                                       # accepted: it waits
                    refused = httpx.post(f"{url2}/v1/completions", json={"prompt": "hi"})
                    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
                    assert refused.json()["error"]["code"] == "too_many_waiting_requests"
            wait_for_no_used_blocks(small)
            ok = httpx.post(f"{url2}/v1/completions", json={"prompt": "hi", "max_tokens": 2})
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
            assert httpx.get(f"{url2}/v1/models").json()["data"][0]["id"] == "tiny-2"
            assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == MODEL            # the first still serves
    finally:
        small.close()


def test_health_models_and_metrics(url, client, engine):
    assert httpx.get(f"{url}/health").status_code == 200
    assert [m.id for m in client.models.list().data] == [MODEL]
    client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=3)
    text = httpx.get(f"{url}/metrics").text
    for name in ("aios_num_requests_running", "aios_num_requests_waiting", "aios_kv_cache_blocks_used",
                 "aios_kv_cache_blocks_total", "aios_prefix_cache_hit_rate", "aios_generation_tokens_total",
                 "aios_time_to_first_token_seconds_bucket", "aios_time_to_first_token_seconds_count"):
        assert f"\n{name}{{" in text, name
    assert metric_value(text, "aios_generation_tokens_total") >= 3
    assert metric_value(text, "aios_time_to_first_token_seconds_count") >= 1
    assert metric_value(text, "aios_kv_cache_blocks_total") == engine.num_kvcache_blocks


# ---- the process -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_the_server_process_with_status_0(tiny_ckpt):
    cmd = [sys.executable, "-m", "aios.server", "--model", tiny_ckpt, "--port", "0", "--device", "cpu",
           "--dtype", "float32", "--log-level", "warning"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "AIOS serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "AIOS serving" in line, f"no URL printed: {line!r}"
        base = line.split("at ", 1)[1].split()[0].removesuffix("/v1")
        assert httpx.get(f"{base}/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
