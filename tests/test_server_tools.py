"""Tools through the real server (aios/server/tools.py, prompts.py): the tools reach the model through
its chat template, and tool_choice decides what the server asks of the engine.

- tools + tool_choice "auto" / "required" / a named function: the prompt is the template rendered
  with the tools (the same token ids as tokenizer.apply_chat_template(..., tools=...)); "none": the
  prompt without them.
- An earlier assistant turn's tool_calls (arguments as JSON text) and a tool's result render as the
  template renders them (arguments as an object, as vLLM passes them).
- "required" and a named function are enforced by structured output: a JSON schema; while the engine
  does not apply structured outputs that is a 400 naming tool_choice.
(Parsing the model's <tool_call> text: tests/test_tool_calls.py, tests/test_server_logprobs.py.)
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from chat_templates import with_tools_template  # noqa: E402

from aios import LLM  # noqa: E402
from aios.server import create_app  # noqa: E402

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "enum": ["Oslo", "Paris"]}},
                                                "required": ["city"]}}}
USER = [{"role": "user", "content": "What is the weather in Oslo?"}]


@pytest.fixture(scope="module")
def tools_ckpt(tiny_ckpt, tmp_path_factory) -> str:
    return with_tools_template(tiny_ckpt, str(tmp_path_factory.mktemp("tiny-tools")))


@pytest.fixture(scope="module")
def served(tools_ckpt):
    """(TestClient, the engine's tokenizer)"""
    from fastapi.testclient import TestClient

    llm = LLM(tools_ckpt, device="cpu", dtype="float32", max_model_len=1024)
    try:
        with TestClient(create_app(llm, served_model_name="tiny")) as client:
            yield client, llm.tokenizer
    finally:
        llm.close()


def prompt_tokens(client, body: dict) -> int:
    response = client.post("/v1/chat/completions", json={"max_tokens": 1, **body})
    assert response.status_code == 200, response.text
    return response.json()["usage"]["prompt_tokens"]


def rendered(tokenizer, messages, tools=None) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
                ["input_ids"])


@pytest.mark.parametrize("tool_choice", [None, "auto"])
def test_tools_reach_the_model_through_its_chat_template(served, tool_choice):
    client, tokenizer = served
    with_tools = rendered(tokenizer, USER, [WEATHER])
    assert len(with_tools) > len(rendered(tokenizer, USER))
    body = {"messages": USER, "tools": [WEATHER]} | ({"tool_choice": tool_choice} if tool_choice else {})
    assert prompt_tokens(client, body) == len(with_tools)


def test_tool_choice_none_leaves_the_tools_out(served):
    client, tokenizer = served
    assert prompt_tokens(client, {"messages": USER, "tools": [WEATHER], "tool_choice": "none"}) == \
        len(rendered(tokenizer, USER))


def test_earlier_tool_calls_and_results_render_as_the_template_renders_them(served):
    client, tokenizer = served
    history = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    template_history = USER + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    want = rendered(tokenizer, template_history, [WEATHER])
    text = tokenizer.decode(want)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}' in text and "<tool_response>" in text
    assert prompt_tokens(client, {"messages": history, "tools": [WEATHER]}) == len(want)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forcing_tool_choice_asks_the_engine_for_structured_output(served, tool_choice):
    client, _ = served
    response = client.post("/v1/chat/completions", json={"messages": USER, "tools": [WEATHER],
                                                          "tool_choice": tool_choice, "max_tokens": 40})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    if choice["finish_reason"] != "length":
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"])["city"] in ("Oslo", "Paris")
