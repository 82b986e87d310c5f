"""The server with its engine in a process of its own (AsyncEngine.in_process, what
`python -m aios.server` runs): same outputs as LLM.generate, aborts free blocks, a dead engine
process fails its requests instead of hanging them, and a bad checkpoint is a clear error."""

import json
import time

import pytest

pytest.importorskip("fastapi")             # the server's packages are optional
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from aios import LLM, SamplingParams  # noqa: E402
from aios.server import create_app, serve_in_background  # noqa: E402
from aios.server.async_engine import AsyncEngine  # noqa: E402
from helpers import random_prompts  # noqa: E402

KW = dict(device="cpu", dtype="float32", max_model_len=512)


def metric(url: str, selector: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if not line.startswith("#") and selector in line)


def stream(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


@pytest.fixture(scope="module")
def served(tiny_ckpt):
    """(base URL, the AsyncEngine) of a server whose engine runs in a child process."""
    async_engine = AsyncEngine.in_process(tiny_ckpt, KW)
    try:
        with serve_in_background(create_app(async_engine, served_model_name="tiny")) as url:
            yield url, async_engine
    finally:
        async_engine.shutdown()
    assert not async_engine.is_alive


def test_engine_process_streams_what_llm_generate_gives(served, tiny_ckpt):
    url, _ = served
    reference = LLM(tiny_ckpt, **KW)
    prompts = random_prompts(reference.config.hf_config.vocab_size, [7, 30], seed=5)
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    want = reference.generate(prompts, params, use_tqdm=False)
    reference.close()
    for prompt, w in zip(prompts, want):
        chunks = stream(url, {"prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": True,
                              "return_token_ids": True, "stream_options": {"include_usage": True}})
        choices = [c["choices"][0] for c in chunks if c["choices"]]
        assert sum((c["token_ids"] for c in choices), []) == w["token_ids"]
        assert "".join(c["text"] for c in choices) == w["text"]
        assert chunks[-1]["usage"]["completion_tokens"] == 16
    assert metric(url, "aios_kv_cache_blocks_used") == 0
    assert metric(url, 'finish_reason="length"') >= 2 and metric(url, "aios_time_to_first_token_seconds_count") >= 2


def test_text_and_chat_are_tokenized_on_the_api_side_as_llm_generate_and_chat_do(served, tiny_ckpt):
    """The engine's process gets token ids: the API process loaded the same tokenizer files."""
    url, async_engine = served
    assert async_engine.tokenizer is not None
    reference = LLM(tiny_ckpt, **KW)
    messages = [{"role": "user", "content": "The king said to the queen"}]
    params = SamplingParams(temperature=0.0, max_tokens=8)
    want_text = reference.generate(["Once upon a time"], params, use_tqdm=False)[0]["text"]
    want_chat = reference.chat(messages, params, use_tqdm=False)[0]["text"]
    reference.close()
    text = httpx.post(f"{url}/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
    chat = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0})
    assert text.json()["choices"][0]["text"] == want_text
    assert chat.json()["choices"][0]["message"]["content"] == want_chat


def test_engine_process_frees_the_blocks_of_a_client_that_left(served):
    url, _ = served
    aborts = metric(url, 'finish_reason="abort"')
    body = {"prompt": [5, 6, 7], "max_tokens": 500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 2:
                break                         # leave after the first chunks of ~500
    deadline = time.monotonic() + 10
    while (metric(url, 'finish_reason="abort"') == aborts or metric(url, "aios_kv_cache_blocks_used")) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(url, 'finish_reason="abort"') == aborts + 1
    assert metric(url, "aios_kv_cache_blocks_used") == 0
    after = stream(url, {"prompt": [5, 6, 7], "max_tokens": 3, "return_token_ids": True})   # and it goes on
    assert sum(len(c["choices"][0]["token_ids"]) for c in after) == 3


def test_engine_process_refuses_bad_requests_with_its_own_errors(served):
    url, _ = served
    r = httpx.post(f"{url}/v1/completions", json={"prompt": [5] * 600, "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"   # validated in the engine's process
    assert httpx.post(f"{url}/v1/completions", json={"prompt": [5], "max_tokens": 2}).status_code == 200


@pytest.mark.slow
def test_a_dead_engine_process_fails_requests_instead_of_hanging_them(tiny_ckpt):
    async_engine = AsyncEngine.in_process(tiny_ckpt, KW)
    try:
        with serve_in_background(create_app(async_engine)) as url:
            assert httpx.get(f"{url}/health").status_code == 200
            async_engine._runner._process.kill()
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/health").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert httpx.get(f"{url}/health").status_code == 503
            r = httpx.post(f"{url}/v1/completions", json={"prompt": [5], "max_tokens": 2}, timeout=10)
            assert r.status_code == 503
    finally:
        async_engine.shutdown()


@pytest.mark.slow
def test_a_checkpoint_the_engine_process_cannot_load_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="model directory .*missing.* does not exist"):
        AsyncEngine.in_process(str(tmp_path / "missing"), KW)
