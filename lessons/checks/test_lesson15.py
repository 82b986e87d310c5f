"""Lesson 15: the SSE events of one streamed request, byte for byte against aios's builder and the
real server's stream, and parsed by json and by the official openai client's types."""

import json
import time
import uuid

import pytest

from aios.server.stream import Delta

LESSON = "15"
ID = "0123456789abcdef0123456789abcdef"
CREATED = 1795596766


def builders(impl, monkeypatch, chat: bool, return_token_ids: bool = False, id_hex: str = ID,
             created: int = CREATED):
    """(the learner's builder, aios's), with the same id and creation time."""
    from aios.server.responses import ResponseBuilder

    with monkeypatch.context() as m:
        m.setattr(uuid, "uuid4", lambda: uuid.UUID(hex=id_hex))
        m.setattr(time, "time", lambda: float(created))
        return (impl.ResponseBuilder("tiny", chat, return_token_ids),
                ResponseBuilder("tiny", chat, return_token_ids))


DELTAS = [Delta(0, " unto", [11]), Delta(0, " him, é", [12, 13]), Delta(0, "", [14]),
          Delta(0, "!", [15], finish_reason="length", final_text=" unto him, é!", num_output_tokens=4)]


def events_of(stream: str) -> list[str]:
    parts = stream.split("\n\n")
    assert parts[-1] == "", "every event ends with a blank line"
    return [p + "\n\n" for p in parts[:-1]]


@pytest.mark.readme("Build it: sse")
def test_an_event_is_data_json_and_a_blank_line(impl):
    from aios.server.responses import sse

    body = {"id": "x", "choices": [{"text": "é \"q\"\n", "finish_reason": None}], "usage": None}
    assert impl.sse(body) == 'data: {"id": "x", "choices": [{"text": "é \\"q\\"\\n", "finish_reason": null}], ' \
                             '"usage": null}\n\n'
    assert impl.sse(body) == sse(body)
    assert impl.usage(5, 3) == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert list(impl.usage(5, 3)) == ["prompt_tokens", "completion_tokens", "total_tokens"]


@pytest.mark.readme("Build it: chunks")
@pytest.mark.parametrize("chat", [False, True], ids=["text", "chat"])
@pytest.mark.parametrize("return_token_ids", [False, True], ids=["", "token_ids"])
@pytest.mark.parametrize("include_usage", [False, True], ids=["", "usage"])
def test_each_chunk_equals_the_servers_bytes(impl, monkeypatch, chat, return_token_ids, include_usage):
    mine, ref = builders(impl, monkeypatch, chat, return_token_ids)
    for d in DELTAS:
        got = mine.delta_event(d.index, d.text, d.token_ids, d.finish_reason, include_usage)
        assert got == ref.delta_event(d.index, d.text, d.token_ids, d.finish_reason, include_usage), d
    if chat:
        assert mine.role_chunk(0, include_usage) == ref.role_chunk(0, include_usage)
    assert mine.usage_chunk({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}) == \
        ref.usage_chunk({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})


def parsed_stream(impl, monkeypatch, chat: bool, include_usage: bool = True):
    mine, ref = builders(impl, monkeypatch, chat)
    events = impl.stream_events(mine, DELTAS, 7, include_usage)
    from lessons.checks.reference.lesson15 import stream_events
    assert events == stream_events(ref, DELTAS, 7, include_usage), "the events differ from the server's"
    assert events[-1] == "data: [DONE]\n\n"
    assert all(e.startswith("data: ") and e.endswith("\n\n") and "\n\n" not in e[:-2] for e in events)
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


@pytest.mark.readme("Build it: one stream")
def test_a_text_stream_is_its_deltas_then_usage_then_done(impl, monkeypatch):
    bodies = parsed_stream(impl, monkeypatch, chat=False)
    assert [b["object"] for b in bodies] == ["text_completion"] * 5
    assert "".join(c["text"] for b in bodies for c in b["choices"]) == " unto him, é!"
    assert [c["finish_reason"] for b in bodies for c in b["choices"]] == [None, None, None, "length"]
    assert bodies[-1]["choices"] == [] and bodies[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 4,
                                                                   "total_tokens": 11}
    assert all(b["usage"] is None for b in bodies[:-1]) and len({b["id"] for b in bodies}) == 1


@pytest.mark.readme("Build it: one stream")
def test_a_chat_stream_opens_with_the_role_and_may_end_without_usage(impl, monkeypatch):
    bodies = parsed_stream(impl, monkeypatch, chat=True, include_usage=False)
    assert [b["object"] for b in bodies] == ["chat.completion.chunk"] * 5
    assert bodies[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [b["choices"][0]["delta"] for b in bodies[1:]] == [{"content": " unto"}, {"content": " him, é"}, {},
                                                              {"content": "!"}]
    assert bodies[-1]["choices"][0]["finish_reason"] == "length" and "usage" not in bodies[-1]


@pytest.mark.readme("Build it: one stream")
def test_the_openai_client_reads_every_chunk(impl, monkeypatch):
    pytest.importorskip("openai", reason="the openai package is not installed")
    from openai._models import construct_type  # what the client itself does with each streamed chunk
    from openai.types import Completion
    from openai.types.chat import ChatCompletionChunk

    text = [construct_type(type_=Completion, value=b) for b in parsed_stream(impl, monkeypatch, chat=False)]
    assert "".join(c.text for chunk in text for c in chunk.choices) == " unto him, é!"
    assert text[-1].usage.total_tokens == 11
    chat = [ChatCompletionChunk.model_validate(b) for b in parsed_stream(impl, monkeypatch, chat=True)]
    assert all(isinstance(c, Completion) for c in text)
    assert chat[0].choices[0].delta.role == "assistant"
    assert "".join(c.delta.content or "" for chunk in chat for c in chunk.choices) == " unto him, é!"
    assert chat[-1].usage.completion_tokens == 4


@pytest.mark.readme("Build it: one stream")
@pytest.mark.parametrize("route", ["completions", "chat/completions"])
def test_your_events_rebuild_the_real_servers_stream_byte_for_byte(impl, tiny_ckpt, monkeypatch, route):
    pytest.importorskip("fastapi", reason="the server's packages are not installed "
                                          "(pip install -r lessons/15_server/requirements.txt)")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from aios import LLM
    from aios.server import create_app, serve_in_background

    chat = route.startswith("chat")
    body = {"model": "tiny", "max_tokens": 6, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            **({"messages": [{"role": "user", "content": "Once upon a time"}]} if chat else
               {"prompt": "Once upon a time"})}
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_model_len=128)
    try:
        with serve_in_background(create_app(llm, served_model_name="tiny")) as url:
            with httpx.stream("POST", f"{url}/v1/{route}", json=body, timeout=60) as response:
                assert response.status_code == 200
                events = events_of("".join(response.iter_text()))
    finally:
        llm.close()
    bodies = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    usage_ = bodies[-1]["usage"]
    deltas = []
    for b in bodies[1 if chat else 0:-1]:                 # the role chunk and the usage chunk are not Deltas
        c = b["choices"][0]
        text = c["delta"].get("content", "") if chat else c["text"]
        last = c["finish_reason"] is not None
        deltas.append(Delta(c["index"], text, [], c["finish_reason"],
                            num_output_tokens=usage_["completion_tokens"] if last else 0))
    mine, _ = builders(impl, monkeypatch, chat, id_hex=bodies[0]["id"].split("-", 1)[1], created=bodies[0]["created"])
    assert impl.stream_events(mine, deltas, usage_["prompt_tokens"], True) == events


@pytest.mark.readme("Build it: one stream")
@pytest.mark.parametrize("route", ["completions", "chat/completions"])
def test_the_server_built_with_your_builder_streams_what_aios_streams(impl, tiny_ckpt, route):
    pytest.importorskip("fastapi", reason="the server's packages are not installed "
                                          "(pip install -r lessons/15_server/requirements.txt)")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from aios import LLM
    from aios.server import create_app, serve_in_background
    from aios.server.responses import ResponseBuilder as AiosResponseBuilder

    chat = route.startswith("chat")
    body = {"model": "tiny", "max_tokens": 6, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            **({"messages": [{"role": "user", "content": "Once upon a time"}]} if chat else
               {"prompt": "Once upon a time"})}

    def stream_with(builder_cls) -> list:
        llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_model_len=128)
        try:
            app = create_app(llm, served_model_name="tiny", response_builder_cls=builder_cls)   # the seam
            with serve_in_background(app) as url:
                with httpx.stream("POST", f"{url}/v1/{route}", json=body, timeout=60) as response:
                    assert response.status_code == 200
                    events = events_of("".join(response.iter_text()))
        finally:
            llm.close()
        bodies = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        for b in bodies:                      # a fresh id and clock per request: the rest must be equal
            b.pop("id", None)
            b.pop("created", None)
        return bodies + [events[-1]]

    # your builder, called once here first: a method still to write fails with its own message,
    # not as a stream the server had to break off
    impl.ResponseBuilder("tiny", chat, False).delta_event(0, "x", [1], None, True)
    assert stream_with(impl.ResponseBuilder) == stream_with(AiosResponseBuilder)
