"""What one client can cost the others (issue 15), bounded: the engine loop never tokenizes (a huge
prompt is refused before it is tokenized, while a concurrent stream goes on), request bodies have a
size limit, an API key guards /v1, a connection sending its headers a byte at a time is closed, a
client that stops reading its stream is aborted, and a sequence that fails alone fails only its
own request. Each time the requests beside it finish with the tokens LLM.generate gives and no KV
block stays in use."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")             # the server's packages are optional
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from aios import LLM, SamplingParams  # noqa: E402
from aios.server import create_app, serve_in_background  # noqa: E402

MAX_MODEL_LEN = 128
PROMPT = "The quick brown dog"


def make_llm(ckpt: str, **kw) -> LLM:
    return LLM(ckpt, device="cpu", dtype="float32", max_model_len=MAX_MODEL_LEN, **kw)


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    llm = make_llm(tiny_ckpt)
    yield llm
    llm.close()


def greedy(reference: LLM, prompt, max_tokens: int, **kw) -> dict:
    return reference.generate([prompt], SamplingParams(temperature=0, max_tokens=max_tokens, **kw),
                              use_tqdm=False)[0]


def wait_for_no_used_blocks(engine: LLM, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.block_manager.num_used_blocks and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.block_manager.num_used_blocks == 0, f"{engine.block_manager.num_used_blocks} blocks still used"


def slow_steps(engine: LLM, seconds: float) -> None:
    run = engine.model_runner.run
    engine.model_runner.run = lambda batch: (time.sleep(seconds), run(batch))[1]


def stream_lines(http: httpx.Client, url: str, body: dict, route: str = "completions"):
    """(arrival time, chunk) of each data event of one SSE stream."""
    with http.stream("POST", f"{url}/v1/{route}", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                yield time.monotonic(), json.loads(line[6:])


# ---- tokenization: on the API side, in a thread ------------------------------------------------------


def test_the_engine_loop_never_tokenizes(tiny_ckpt, reference):
    llm = make_llm(tiny_ckpt)
    app = create_app(llm, served_model_name="tiny")
    tokenizer, calls = llm.tokenizer, []
    for name in ("encode", "apply_chat_template"):
        real = getattr(tokenizer, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, threading.current_thread().name))
            return _real(*args, **kwargs)

        setattr(tokenizer, name, spy)
    messages = [{"role": "user", "content": PROMPT}]
    try:
        with serve_in_background(app) as url:
            got = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "temperature": 0})
            chat = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages, "max_tokens": 6,
                                                                  "temperature": 0})
    finally:
        llm.close()
    assert got.json()["choices"][0]["text"] == greedy(reference, PROMPT, 6)["text"]
    want_chat = reference.chat(messages, SamplingParams(temperature=0, max_tokens=6), use_tqdm=False)[0]
    assert chat.json()["choices"][0]["message"]["content"] == want_chat["text"]
    assert [c for c in calls if c[1] == "aios-engine-loop"] == []


def test_a_huge_prompt_is_refused_before_tokenizing_while_a_stream_goes_on(tiny_ckpt, reference):
    """4 MB of text took 3.3 s to tokenize in the engine loop: every stream stalled for as long."""
    llm = make_llm(tiny_ckpt)
    slow_steps(llm, 0.01)
    body = {"prompt": PROMPT, "max_tokens": 60, "temperature": 0, "ignore_eos": True}
    huge = "In the beginning God created the heaven and the earth. " * (4 * 2**20 // 56)
    refused = {}
    try:
        with serve_in_background(create_app(llm, served_model_name="tiny")) as url, httpx.Client(timeout=60) as http:
            def send_huge():
                start = time.monotonic()
                refused["response"] = httpx.post(f"{url}/v1/completions", json={"prompt": huge}, timeout=60)
                refused["seconds"] = time.monotonic() - start

            events, sender = [], threading.Thread(target=send_huge)
            for arrival, chunk in stream_lines(http, url, body):
                events.append((arrival, chunk["choices"][0]))
                if len(events) == 5:
                    sender.start()
            sender.join()
            wait_for_no_used_blocks(llm)
    finally:
        llm.close()
    response = refused["response"]
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert "characters" in response.json()["error"]["message"] and refused["seconds"] < 3
    assert "".join(c["text"] for _, c in events) == greedy(reference, PROMPT, 60, ignore_eos=True)["text"]
    gaps = [b - a for (a, _), (b, _) in zip(events, events[1:])]
    assert max(gaps) < 1.5, f"the stream stalled {max(gaps):.2f} s"


def test_no_text_covers_more_characters_per_token_than_the_bound(tiny_ckpt):
    """The refusal is safe: a prompt of max_prompt_chars characters or fewer is never refused,
    and one of more could not fit, since no token covers more than max_token_chars characters."""
    from aios.server.prompts import max_token_chars

    llm = make_llm(tiny_ckpt)
    try:
        bound = max_token_chars(llm.tokenizer)
        longest = max(llm.tokenizer.get_vocab(), key=len)
        texts = [PROMPT, llm.tokenizer.convert_tokens_to_string([longest]) * 7, " " * 300, "ü😀中" * 50,
                 "<|im_start|>" * 20, "In the beginning God created the heaven and the earth. " * 20]
        for text in texts:
            assert len(text) <= len(llm.tokenize(text)) * bound, text[:40]
    finally:
        llm.close()


# ---- request bodies, API key, HEAD /health ----------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tiny_ckpt):
    """(base URL, engine) of a server with an API key and a 2,000-byte body limit."""
    llm = make_llm(tiny_ckpt)
    try:
        app = create_app(llm, served_model_name="tiny", api_key="sesame", max_request_bytes=2000)
        with serve_in_background(app) as url:
            yield url, llm
    finally:
        llm.close()


AUTH = {"Authorization": "Bearer sesame"}


def assert_serving(url: str, llm: LLM, reference: LLM, headers: dict = AUTH) -> None:
    ok = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "temperature": 0},
                    headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["text"] == greedy(reference, PROMPT, 5)["text"]
    wait_for_no_used_blocks(llm)


def test_a_body_over_the_limit_is_a_413_from_its_content_length(guarded, reference):
    url, llm = guarded
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "x" * 5000}, headers=AUTH)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "2000 bytes" in error["message"]
    assert_serving(url, llm, reference)


def test_a_chunked_body_over_the_limit_is_a_413_once_its_bytes_pass_it(guarded, reference):
    url, llm = guarded
    sent = []

    def chunks():                             # no Content-Length: Transfer-Encoding: chunked
        yield b'{"prompt": "'
        for _ in range(40):
            sent.append(1)
            yield b"x" * 100
        yield b'"}'

    response = httpx.post(f"{url}/v1/completions", content=chunks(),
                          headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    small = httpx.post(f"{url}/v1/completions", content=iter([b'{"prompt": "hi", ', b'"max_tokens": 2}']),
                       headers={**AUTH, "Content-Type": "application/json"})
    assert small.status_code == 200 and small.json()["usage"]["completion_tokens"] == 2
    assert_serving(url, llm, reference)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}])
def test_v1_without_the_api_key_is_a_401(guarded, reference, headers):
    url, llm = guarded
    for response in (httpx.post(f"{url}/v1/completions", json={"prompt": "hi"}, headers=headers),
                     httpx.get(f"{url}/v1/models", headers=headers)):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert_serving(url, llm, reference)


def test_health_and_metrics_stay_open_and_head_health_answers(guarded):
    url, _ = guarded
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.post(f"{url}/v1/completions", content=b"x" * 3000, headers=AUTH).status_code == 413
    assert httpx.get(f"{url}/health").status_code == 200
    head = httpx.head(f"{url}/health")
    assert head.status_code == 200 and head.content == b""
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200 and 'status="401"' in metrics.text and 'status="413"' in metrics.text


def test_the_command_line_takes_the_api_key_from_the_environment(monkeypatch):
    from aios.server.__main__ import parse_args

    monkeypatch.setenv("AIOS_API_KEY", "from-env")
    assert parse_args([]).api_key == "from-env"
    assert parse_args(["--api-key", "flag"]).api_key == "flag"
    monkeypatch.delenv("AIOS_API_KEY")
    args = parse_args(["--max-request-bytes", "1000"])
    assert args.api_key is None and args.max_request_bytes == 1000


# ---- a client that stops reading ---------------------------------------------------------------------


def test_a_stream_nobody_reads_is_aborted_past_its_backlog_and_frees_its_blocks(tiny_ckpt, reference):
    from aios.server.async_engine import AsyncEngine
    from aios.server.protocol import APIError

    llm = make_llm(tiny_ckpt)
    slow_steps(llm, 0.005)
    async_engine = AsyncEngine.in_thread(llm, max_stream_backlog=8)
    async_engine.start()
    ids = llm.tokenize(PROMPT)

    async def main():
        def submit(max_tokens: int):
            return async_engine.generate([ids], SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True),
                                         fill_max_tokens=False, arrival_time=time.perf_counter(),
                                         return_token_ids=True)

        stalled = await submit(100)           # never read while the other runs
        read = [delta async for delta in await submit(30)]
        deadline = time.monotonic() + 10
        while llm.block_manager.num_used_blocks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with pytest.raises(APIError, match="unread") as failed:
            async for _ in stalled:
                pass
        return read, failed.value

    try:
        read, error = asyncio.run(main())
        assert error.code == "stream_backlog_exceeded"
        assert sum((d.token_ids for d in read), []) == greedy(reference, PROMPT, 30, ignore_eos=True)["token_ids"]
        assert llm.block_manager.num_used_blocks == 0
        assert async_engine.counters.finished["abort"] == 1 and async_engine.counters.finished["length"] == 1
    finally:
        async_engine.shutdown()
        llm.close()


def test_a_slow_reader_within_its_backlog_gets_every_token(tiny_ckpt, reference):
    llm = make_llm(tiny_ckpt)
    body = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "ignore_eos": True, "return_token_ids": True}
    try:
        with serve_in_background(create_app(llm, served_model_name="tiny", max_stream_backlog=16)) as url, \
                httpx.Client(timeout=60) as http:
            ids = []
            for _, chunk in stream_lines(http, url, body):
                ids += chunk["choices"][0]["token_ids"]
                time.sleep(0.01)              # slower than the engine: the backlog grows, then drains
        assert ids == greedy(reference, PROMPT, 40, ignore_eos=True)["token_ids"]
        wait_for_no_used_blocks(llm)
    finally:
        llm.close()


# ---- slowloris: headers a byte at a time -------------------------------------------------------------


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_connection_sending_its_headers_too_slowly_is_closed_while_requests_are_served(tiny_ckpt, reference,
                                                                                         parser, monkeypatch):
    import socket

    from aios.server import http_protocol

    if parser == "h11":                       # what uvicorn runs where httptools is not installed
        monkeypatch.setattr(http_protocol, "HttpToolsProtocol", None)
    llm = make_llm(tiny_ckpt)
    headers = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 10_000
    try:
        with serve_in_background(create_app(llm, served_model_name="tiny"), timeout_header_read=0.5) as url:
            host, port = url.removeprefix("http://").split(":")
            slow = [socket.create_connection((host, int(port))) for _ in range(20)]
            idle = socket.create_connection((host, int(port)))          # connects, sends nothing
            for s in slow:
                s.setblocking(False)
            start, sent, closed_after = time.monotonic(), 0, {}
            while len(closed_after) < len(slow) and time.monotonic() - start < 5:
                for i, s in enumerate(slow):
                    if i in closed_after:
                        continue
                    try:
                        s.send(headers[sent:sent + 1])                  # a byte at a time, never the blank line
                        data = s.recv(1024)                             # while open the server says nothing
                        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
                        closed_after[i] = time.monotonic() - start
                    except BlockingIOError:
                        pass                                            # nothing to read: still open
                    except OSError:
                        closed_after[i] = time.monotonic() - start
                sent += 1
                if sent % 10 == 0:
                    assert_serving(url, llm, reference, headers={})     # served meanwhile
                time.sleep(0.02)
            idle.settimeout(2)
            assert idle.recv(1024).startswith(b"HTTP/1.1 408")
            for s in [*slow, idle]:
                s.close()
            assert len(closed_after) == len(slow), f"{len(slow) - len(closed_after)} slow connections still open"
            assert all(0.4 < t < 3 for t in closed_after.values()), closed_after
            with httpx.Client() as http:                                # keep-alive past the timeout: served
                for _ in range(3):
                    assert http.get(f"{url}/health").status_code == 200
                    time.sleep(0.3)
    finally:
        llm.close()


# ---- a sequence's own failure --------------------------------------------------------------------------


def test_a_sequence_that_fails_alone_fails_only_its_request(tiny_ckpt, reference):
    """The scheduler finishes a sequence whose stop check raised with finish_reason "error" and
    seq.error: its request gets a 500, the requests beside it their tokens."""
    llm = make_llm(tiny_ckpt)
    doomed = llm.tokenize("The king said to the queen")
    check = llm.scheduler.stop_checker.check

    def fail_the_doomed(seq, idx):
        if seq.prompt_token_ids == doomed and seq.num_known_output_tokens >= 3:
            raise ValueError("simulated stop-check failure")
        return check(seq, idx)

    llm.scheduler.stop_checker.check = fail_the_doomed
    body = {"max_tokens": 20, "temperature": 0, "ignore_eos": True}
    try:
        with serve_in_background(create_app(llm, served_model_name="tiny")) as url:
            async def run_all():
                async with httpx.AsyncClient(timeout=60) as http:
                    return await asyncio.gather(
                        http.post(f"{url}/v1/completions", json={**body, "prompt": doomed, "n": 2}),
                        http.post(f"{url}/v1/completions", json={**body, "prompt": PROMPT}),
                        http.post(f"{url}/v1/completions", json={**body, "prompt": PROMPT + " again", "stream": True}))

            failed, ok, streamed = asyncio.run(run_all())
            wait_for_no_used_blocks(llm)
            metrics = httpx.get(f"{url}/metrics").text
    finally:
        llm.close()
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert "simulated stop-check failure" in error["message"] and error["type"] == "server_error"
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == greedy(reference, PROMPT, 20,
                                                                              ignore_eos=True)["text"]
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == greedy(reference, PROMPT + " again", 20,
                                                                      ignore_eos=True)["text"]
    assert 'finish_reason="error"' in metrics
