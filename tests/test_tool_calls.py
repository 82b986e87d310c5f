"""aios/server/tool_calls.py: tool calls out of generated text, whole and streamed.

- A whole text gives OpenAI's tool_calls (name, the raw JSON of the arguments) and the content
  before the first <tool_call>.
- Fed in any pieces (one character at a time, random cuts, tags split across pieces), the parser
  gives the same calls and content as the whole text, and never sends part of a tag as content.
- Text that never forms a call stays content; parallel_tool_calls=false keeps the first call.
- tool_choice="required" (a JSON array of {"name", "parameters"}) and a named function likewise.
"""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("pydantic")

from aios.server.tool_calls import (  # noqa: E402
    HermesToolParser,
    JSONArrayToolParser,
    NamedToolParser,
    merge_tool_call_deltas,
    parse_all,
)

WEATHER = '{"name": "get_weather", "arguments": {"city": "Pa}ris \\"x\\"", "days": [1, {"a": 2}], "ok": true}}'
TWO_CALLS = (f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>\n"
             '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')


def stream(parser, pieces: list[str]) -> tuple[str | None, list[dict], list[str]]:
    """(content, calls, the content pieces as sent) of a parser fed pieces, as app.py feeds it."""
    sent, deltas = [], []
    for piece in pieces:
        content, calls = parser.feed(piece)
        sent.append(content)
        deltas += calls
    rest, more = parser.finish()
    sent.append(rest)
    deltas += more
    for d in deltas:                                   # OpenAI's stream form: a head first, then arguments
        entry = d.as_openai()
        assert entry["index"] == d.index and ("id" in entry) == (d.id is not None)
    content = "".join(sent)
    return content or None, merge_tool_call_deltas(deltas), sent


def random_cuts(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def names_and_arguments(calls: list[dict]) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


def test_qwen_tool_calls_become_openai_tool_calls():
    content, calls = parse_all(HermesToolParser(), TWO_CALLS)
    assert content == "Let me check.\n"
    assert names_and_arguments(calls) == [("get_weather", json.dumps(json.loads(WEATHER)["arguments"])),
                                          ("get_time", "{}")]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 2


@pytest.mark.parametrize("seed", range(20))
def test_a_stream_in_any_pieces_gives_the_whole_texts_calls(seed):
    rng = random.Random(seed)
    whole = parse_all(HermesToolParser(), TWO_CALLS)
    pieces = list(TWO_CALLS) if seed == 0 else random_cuts(TWO_CALLS, rng)
    content, calls, _ = stream(HermesToolParser(), pieces)
    assert content == whole[0]
    assert names_and_arguments(calls) == names_and_arguments(whole[1])


def test_a_tag_split_across_pieces_is_never_sent_as_content():
    _, _, sent = stream(HermesToolParser(), ["Hi <tool", "_ca", "ll>\n", WEATHER, "\n</tool_call>"])
    assert sent[0] == "Hi " and all("<" not in s for s in sent)


def test_a_lone_angle_bracket_that_is_no_tag_is_content_once_certain():
    content, calls, sent = stream(HermesToolParser(), ["a < b and <tool", "box> done"])
    assert calls == [] and content == "a < b and <toolbox> done"
    assert sent[0] == "a < b and "                     # "<tool" waits: it may yet become the tag


def test_text_that_never_forms_a_call_stays_content():
    for text in ["<tool_call>not json</tool_call>", "<tool_call>\n{\"name\": 5}", "plain text",
                 "<tool_call>\n{\"arguments\": {}, \"name\": \"f\"}\n</tool_call>"]:
        whole = parse_all(HermesToolParser(), text)
        assert whole == (text, [])
        assert stream(HermesToolParser(), list(text))[:2] == (text, [])


def test_a_name_that_is_no_json_string_is_no_call_and_fails_nothing():
    # the model's text, not JSON: a raw control character or an unknown escape in the name
    for text in ['<tool_call>\n{"name": "get\nweather", "arguments": {}}\n</tool_call>',
                 '<tool_call>\n{"name": "get\\qweather", "arguments": {}}\n</tool_call>']:
        assert parse_all(HermesToolParser(), text) == (text, [])
        assert stream(HermesToolParser(), list(text))[:2] == (text, [])


def test_parallel_tool_calls_false_keeps_the_first_call():
    content, calls = parse_all(HermesToolParser(max_calls=1), TWO_CALLS)
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert names_and_arguments(stream(HermesToolParser(max_calls=1), list(TWO_CALLS))[1]) == \
        names_and_arguments(calls)


def test_a_call_cut_short_keeps_the_arguments_written_so_far():
    text = '<tool_call>\n{"name": "f", "arguments": {"city": "Par'
    content, calls = parse_all(HermesToolParser(), text)
    assert content is None and names_and_arguments(calls) == [("f", '{"city": "Par')]


def test_arguments_stream_as_the_model_writes_them():
    parser = HermesToolParser()
    parser.feed('<tool_call>\n{"name": "f", "arguments": ')
    _, calls = parser.feed('{"a": ')
    assert [(d.index, d.arguments, d.id) for d in calls] == [(0, '{"a": ', None)]
    _, calls = parser.feed('1}}\n</tool_call>')
    assert [d.arguments for d in calls] == ["1}"]          # the call object's own "}" is not an argument


REQUIRED_OUTPUT = '[{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "get_time", "parameters": {}}]'


@pytest.mark.parametrize("seed", range(5))
def test_required_calls_are_the_json_arrays_elements(seed):
    content, calls = parse_all(JSONArrayToolParser(), REQUIRED_OUTPUT)
    assert content is None
    assert names_and_arguments(calls) == [("get_weather", '{"city": "Oslo"}'), ("get_time", "{}")]
    pieces = random_cuts(REQUIRED_OUTPUT, random.Random(seed))
    assert names_and_arguments(stream(JSONArrayToolParser(), pieces)[1]) == names_and_arguments(calls)
    assert len(parse_all(JSONArrayToolParser(max_calls=1), REQUIRED_OUTPUT)[1]) == 1


def test_a_named_function_takes_the_whole_output_as_its_arguments():
    content, calls, _ = stream(NamedToolParser("get_weather"), ['{"ci', 'ty": "Oslo"}'])
    assert content is None and names_and_arguments(calls) == [("get_weather", '{"city": "Oslo"}')]
