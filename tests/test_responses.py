"""aios/server/responses.py: the hand-built SSE event of a delta is byte-for-byte what serializing
the chunk's dict gives (OpenAI's wire format), for every kind of text and option."""

import itertools
import json

import pytest

pytest.importorskip("fastapi")             # aios.server imports it; the server's packages are optional

from aios.server.responses import ResponseBuilder, sse

TEXTS = ["", "plain", ' a "quote", a \\ backslash,\na newline and a tab\t', "ünïcödé 😀 中文", "</s>"]


@pytest.mark.parametrize("chat,return_token_ids,include_usage",
                         list(itertools.product([False, True], repeat=3)))
def test_delta_event_is_the_serialized_chunk(chat, return_token_ids, include_usage):
    builder = ResponseBuilder('model "q"/ü', chat, return_token_ids)
    for text, ids, reason, index in itertools.product(TEXTS, [[], [7], [1, 151935, 0]], [None, "stop", "length"],
                                                      [0, 3]):
        delta = ({"content": text} if text else {}) if chat else text
        want = sse(builder._chunk(index, delta, ids, reason, include_usage))
        got = builder.delta_event(index, text, ids, reason, include_usage)
        assert got == want
        body = json.loads(got.removeprefix("data: "))
        assert body["id"] == builder.id and body["choices"][0]["index"] == index
        assert ("token_ids" in body["choices"][0]) == return_token_ids
