"""What a newcomer and a hostile client send first (issue 15): every field the server does not
implement is refused with a 400 naming it unless its value asks for nothing; malformed values
(lone surrogates, `stop: 5`, messages without content, NaN) are 400s naming the field, never a
500 or a traceback's text. After each, a greedy request gives the tokens LLM.generate gives and no
KV block stays in use."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")             # the server's packages are optional
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from aios import LLM, SamplingParams  # noqa: E402
from aios.server import create_app, serve_in_background  # noqa: E402

MAX_MODEL_LEN = 128
GOOD = {"prompt": "The quick brown dog", "max_tokens": 6, "temperature": 0}


@pytest.fixture(scope="module")
def served(tiny_ckpt):
    """(base URL, the served engine, what LLM.generate gives for GOOD)"""
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_model_len=MAX_MODEL_LEN, max_stop_strings=2,
              max_stop_string_len=20)
    want = llm.generate([GOOD["prompt"]], SamplingParams(temperature=0, max_tokens=6), use_tqdm=False)[0]
    try:
        with serve_in_background(create_app(llm, served_model_name="tiny")) as url:
            yield url, llm, want
    finally:
        llm.close()


def post(url: str, route: str, body: dict | str) -> httpx.Response:
    if isinstance(body, str):                 # raw JSON text: NaN, lone surrogates as \\ud800 escapes
        return httpx.post(f"{url}/v1/{route}", content=body, headers={"Content-Type": "application/json"})
    return httpx.post(f"{url}/v1/{route}", json=body)


def assert_refused_then_serving(served, route: str, body: dict | str, param: str, words: str = "",
                                status: int = 400) -> dict:
    url, llm, want = served
    response = post(url, route, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert words in error["message"], error
    ok = post(url, "completions", GOOD)
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == want["text"]
    assert llm.block_manager.num_used_blocks == 0
    return error


USER = [{"role": "user", "content": "hi"}]
# field -> (route, value that asks for something AIOS does not do)
UNIMPLEMENTED = {
    "skip_special_tokens": ("completions", False), "truncate_prompt_tokens": ("completions", 8),
    "use_beam_search": ("completions", True), "length_penalty": ("completions", 0.5),
    "functions": ("chat/completions", [{"name": "f"}]), "max_completion_tokens": ("completions", 5),
    "echo": ("chat/completions", True), "guided_decoding_backend": ("completions", "outlines"),
}


@pytest.mark.parametrize("field", list(UNIMPLEMENTED))
def test_a_field_aios_does_not_implement_is_a_400_naming_it(served, field):
    route, value = UNIMPLEMENTED[field]
    body = {"messages": USER} if route.startswith("chat") else {"prompt": "hi"}
    assert_refused_then_serving(served, route, {**body, field: value}, field, "not supported")


# request field -> (route, value, the SamplingParams field it sets)
MAPPED = {
    "repetition_penalty": ("completions", 1.2, "repetition_penalty"), "min_tokens": ("completions", 2, "min_tokens"),
    "guided_json": ("chat/completions", {"type": "object"}, "structured_outputs"),
    "response_format": ("chat/completions", {"type": "json_object"}, "structured_outputs"),
    "include_stop_str_in_output": ("completions", True, "include_stop_str_in_output"),
    "prompt_logprobs": ("completions", 1, "prompt_logprobs"), "logprobs": ("completions", 0, "logprobs"),
    "presence_penalty": ("chat/completions", 0.5, "presence_penalty"), "best_of": ("completions", 2, "best_of"),
    "frequency_penalty": ("completions", 0.5, "frequency_penalty"),
    "logit_bias": ("completions", {"7": 5}, "logit_bias"),
    "bad_words": ("completions", ["the"], "bad_words"),
}


@pytest.mark.parametrize("field", list(MAPPED))
def test_a_mapped_field_is_served_by_the_engine(served, field):
    """The server maps every issue-20 field onto what the engine applies."""
    route, value, params_field = MAPPED[field]
    body = {"messages": USER} if route.startswith("chat") else {"prompt": "hi"}
    body = {**body, field: value, "max_tokens": 3}
    response = post(served[0], route, body)
    assert response.status_code == 200, response.text


def test_an_unknown_field_is_a_400_naming_it(served):
    assert_refused_then_serving(served, "completions", {"prompt": "hi", "temprature": 0}, "temprature",
                                "not a field")


NOT_ASKED = {"repetition_penalty": 1.0, "min_tokens": 0, "include_stop_str_in_output": False,
             "skip_special_tokens": True, "use_beam_search": False, "echo": False, "top_logprobs": 0,
             "presence_penalty": 0.0, "frequency_penalty": 0, "logit_bias": {}, "user": "someone", "best_of": 1,
             "response_format": {"type": "text"}}


def test_fields_at_values_that_ask_for_nothing_change_nothing(served):
    url, _, want = served
    response = post(url, "completions", {**GOOD, **NOT_ASKED, "logprobs": None})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == want["text"]
    chat = post(url, "chat/completions", {"messages": USER, "max_tokens": 2, "logprobs": False, "tools": [],
                                          "tool_choice": "none", **NOT_ASKED})
    assert chat.status_code == 200, chat.text


def test_a_bool_is_not_the_number_it_equals():
    from aios.server.protocol import means_not_asked

    assert not means_not_asked(True, (None, 1)) and not means_not_asked(0, (None, False))
    assert means_not_asked(1.0, (None, 1)) and means_not_asked(None, (None,)) and means_not_asked({}, (None, {}))


CLEAR_ERRORS = {
    "surrogate_prompt": ("completions", '{"prompt": "hi \\ud800 there"}', "prompt", "lone surrogate"),
    "surrogate_in_prompt_list": ("completions", '{"prompt": ["ok", "\\udfff"]}', "prompt", "prompt[1]"),
    "surrogate_message": ("chat/completions", '{"messages": [{"role": "user", "content": "\\ud83d"}]}',
                          "messages", "lone surrogate"),
    "surrogate_stop": ("completions", '{"prompt": "hi", "stop": ["\\ud800"]}', "stop", "lone surrogate"),
    "stop_number": ("completions", {"prompt": "hi", "stop": 5}, "stop", "stop must be a string or a list"),
    "no_content": ("chat/completions", {"messages": [{"role": "system", "content": "be brief"},
                                                     {"role": "user"}]}, "messages", "messages.1.content"),
    "null_content": ("chat/completions", {"messages": [{"role": "user", "content": None}]}, "messages",
                     "messages.0: content: null"),
    "tool_call_without_function": ("chat/completions", {"messages": [{"role": "assistant", "content": "x",
                                                                      "tool_calls": [{"id": "1"}]}]},
                                   "messages", "function"),
    "tool_calls_in_a_user_message": ("chat/completions", {"messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "1", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages", "assistant"),
    "tool_call_arguments_not_json": ("chat/completions", {"messages": [{"role": "assistant", "content": None,
                                                                        "tool_calls": [{"id": "1", "function": {
                                                                            "name": "f", "arguments": "{x"}}]}]},
                                     "messages", "JSON"),
    "frequency_penalty_bool": ("completions", {"prompt": "hi", "frequency_penalty": True}, "frequency_penalty", ""),
    "presence_penalty_out_of_range": ("completions", {"prompt": "hi", "presence_penalty": 3}, "presence_penalty",
                                      "[-2, 2]"),
    "logit_bias_key_not_a_token_id": ("completions", {"prompt": "hi", "logit_bias": {"the": 1}}, "logit_bias",
                                      "token ids"),
    "logit_bias_key_outside_vocab": ("completions", {"prompt": "hi", "logit_bias": {"100000": 1}}, "logit_bias",
                                     "outside the vocabulary"),
    "logit_bias_value_out_of_range": ("completions", {"prompt": "hi", "logit_bias": {"5": 101}}, "logit_bias",
                                      "[-100, 100]"),
    "logprobs_negative": ("completions", {"prompt": "hi", "logprobs": -1}, "logprobs", ">= 0"),
    "chat_logprobs_not_bool": ("chat/completions", {"messages": USER, "logprobs": 2}, "logprobs", ""),
    "top_logprobs_without_logprobs": ("chat/completions", {"messages": USER, "top_logprobs": 2}, "top_logprobs",
                                      "logprobs: true"),
    "top_logprobs_past_20": ("chat/completions", {"messages": USER, "logprobs": True, "top_logprobs": 21},
                             "top_logprobs", "[0, 20]"),
    "n_below_best_of_streamed": ("completions", {"prompt": "hi", "n": 1, "best_of": 2, "stream": True}, "best_of",
                                 "stream"),
    "best_of_below_n": ("completions", {"prompt": "hi", "n": 3, "best_of": 2}, "best_of", ">= n"),
    "min_tokens_past_max_tokens": ("completions", {"prompt": "hi", "min_tokens": 20, "max_tokens": 4}, "min_tokens",
                                   "max_tokens"),
    "bad_words_not_strings": ("completions", {"prompt": "hi", "bad_words": [1]}, "bad_words", ""),
    "response_format_unknown_type": ("chat/completions", {"messages": USER, "response_format": {"type": "xml"}},
                                     "response_format", ""),
    "response_format_schema_missing": ("chat/completions", {"messages": USER, "response_format": {
        "type": "json_schema"}}, "response_format", "json_schema"),
    "response_format_schema_not_object": ("chat/completions", {"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": "no"}}}, "response_format", ""),
    "two_constraints": ("completions", {"prompt": "hi", "guided_regex": "a+", "guided_choice": ["a"]},
                        "guided_choice", "once"),
    "structured_outputs_unknown_key": ("completions", {"prompt": "hi", "structured_outputs": {
        "regex": "a", "disable_any_whitespace": True}}, "structured_outputs", ""),
    "structured_outputs_two_keys": ("completions", {"prompt": "hi", "structured_outputs": {
        "regex": "a", "choice": ["a"]}}, "structured_outputs", "exactly one"),
    "guided_choice_empty": ("completions", {"prompt": "hi", "guided_choice": []}, "guided_choice", "non-empty"),
    "tool_without_function": ("chat/completions", {"messages": USER, "tools": [{"type": "function"}]}, "tools", ""),
    "tool_name_invalid": ("chat/completions", {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "no spaces"}}]}, "tools", "1-64"),
    "tool_choice_without_tools": ("chat/completions", {"messages": USER, "tool_choice": "required"}, "tool_choice",
                                  "needs tools"),
    "tool_choice_names_an_unknown_function": ("chat/completions", {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                                          "function": {"name": "g"}}},
        "tool_choice", "not in tools"),
    "strict_tool_under_auto": ("chat/completions", {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "strict": True}}]}, "tools", "strict"),
    "tool_choice_unknown_string": ("chat/completions", {"messages": USER, "tool_choice": "sometimes"},
                                   "tool_choice", ""),
    "tools_need_a_template_that_renders_them": ("chat/completions", {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "f"}}]}, "tools", "does not render tools"),
    "temperature_nan": ("completions", '{"prompt": "hi", "temperature": NaN}', "temperature", "finite"),
    "temperature_infinity": ("completions", '{"prompt": "hi", "temperature": Infinity}', "temperature", "finite"),
    "top_p_nan": ("chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}',
                  "top_p", "finite"),
    "temperature_bool": ("completions", {"prompt": "hi", "temperature": True}, "temperature", ""),
    "token_id_outside_vocab": ("completions", {"prompt": [1, 10**9]}, "prompt", "outside the vocabulary"),
    "message_longer_than_fits": ("chat/completions", {"messages": [{"role": "user", "content": "x" * 100_000}]},
                                 "messages", "characters"),
    "stream_options_unimplemented": ("completions", {"prompt": "hi", "stream": True,
                                                     "stream_options": {"continuous_usage_stats": True}},
                                     "stream_options", "continuous_usage_stats"),
}


@pytest.mark.parametrize("case", list(CLEAR_ERRORS))
def test_a_malformed_value_is_a_400_naming_its_field(served, case):
    route, body, param, words = CLEAR_ERRORS[case]
    error = assert_refused_then_serving(served, route, body, param, words)
    assert "TextEncodeInput" not in error["message"] and "Undefined" not in error["message"]


def test_stop_strings_past_the_engines_bounds_are_a_400_naming_stop(served):
    """Config.max_stop_strings / max_stop_string_len, checked by LLMEngine.validate in the engine loop."""
    assert_refused_then_serving(served, "completions", {"prompt": "hi", "stop": ["a", "b", "c"]}, "stop",
                                "at most 2")
    assert_refused_then_serving(served, "chat/completions", {"messages": USER, "stop": "x" * 21}, "stop",
                                "at most 20 characters")


def test_error_bodies_are_valid_json_even_for_surrogates(served):
    url, _, _ = served
    response = post(url, "completions", '{"prompt": "hi", "model": "\\ud800"}')
    assert response.status_code == 404
    json.loads(response.text)


@pytest.mark.parametrize("field,value", [
    ("guided_regex", "(unclosed"), ("guided_grammar", "root ::= ("),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}})])
def test_a_constraint_the_engine_cannot_compile_is_a_400_naming_its_field(served, field, value):
    """The engine names structured_outputs; the server says which of the request's fields set it."""
    assert_refused_then_serving(served, "chat/completions", {"messages": USER, field: value}, field)
