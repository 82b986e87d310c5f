"""The OpenAI wire format on the way out: response bodies and server-sent-event (SSE) chunks.

A streamed response is a sequence of `data: {json}\\n\\n` events, one per text delta of one choice,
each choice's last carrying its finish_reason, and then, when the client asked with
`stream_options.include_usage`, one chunk with no choices and the usage; then `data: [DONE]`.

With `return_token_ids` (vLLM's extension, and always on a server without a tokenizer) every choice
also carries "token_ids": in a whole response all its output token ids, in a chunk the ones that
chunk adds (so a choice's chunks concatenate to all of them). Without it no "token_ids" key appears.

A request for logprobs, tool calls or echo gets its chunks' contents from aios/server/choices.py
and written by choice_event; every other request's by delta_event (built for speed).
"""

from __future__ import annotations

import json
import time
import uuid

DONE = "data: [DONE]\n\n"


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ResponseBuilder:
    """Bodies of one response: the id and creation time are shared by all its chunks."""

    def __init__(self, model: str, chat: bool, return_token_ids: bool = False) -> None:
        self.model, self.chat, self.return_token_ids = model, chat, return_token_ids
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        # A stream writes one chunk per token: its constant head is serialized once (delta_event).
        head = json.dumps(self._envelope("chat.completion.chunk" if chat else "text_completion", []),
                          ensure_ascii=False)
        self._event_head = f'data: {head.removesuffix("[]}")}[{{"index": '

    def _envelope(self, object_: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model,
                "choices": choices}

    # ---- whole responses -----------------------------------------------------------------------

    def response(self, texts: list[str], finish_reasons: list[str | None], usage_: dict,
                 token_ids: list[list[int]] | None = None, extras: list[dict] | None = None) -> dict:
        """extras (aios/server/choices.py, ChoiceOutput.merged): per choice its content (instead of
        texts[i]), tool_calls, logprobs and prompt_logprobs, for requests that asked for them."""
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": r} for i, (t, r) in enumerate(zip(texts, finish_reasons))]
            body = self._envelope("chat.completion", choices)
        else:
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                       for i, (t, r) in enumerate(zip(texts, finish_reasons))]
            body = self._envelope("text_completion", choices)
        for choice, extra in zip(choices, extras or []):
            choice["logprobs"] = extra["logprobs"]
            if self.chat:
                choice["message"]["content"] = extra["content"]
                if extra["tool_calls"]:
                    choice["message"]["tool_calls"] = extra["tool_calls"]
            else:
                choice["text"] = extra["content"] or ""
                if extra["prompt_logprobs"] is not None:
                    choice["prompt_logprobs"] = extra["prompt_logprobs"]
        if self.chat and extras:                  # vLLM: the prompt's, once per response
            prompt_logprobs = next((e["prompt_logprobs"] for e in extras if e["prompt_logprobs"] is not None), None)
            if prompt_logprobs is not None:
                body["prompt_logprobs"] = prompt_logprobs
        if self.return_token_ids:
            for choice, ids in zip(choices, token_ids):
                choice["token_ids"] = ids
        body["usage"] = usage_
        return body

    # ---- stream chunks -------------------------------------------------------------------------

    def role_chunk(self, index: int, include_usage: bool) -> dict:
        """Chat streams open each choice with the assistant role and empty content."""
        return self._chunk(index, {"role": "assistant", "content": ""}, [], None, include_usage)

    def delta_event(self, index: int, text: str, token_ids: list[int], finish_reason: str | None,
                    include_usage: bool) -> str:
        """The SSE event of one delta: what sse() gives for the chunk body (the same JSON, keys in the
        same order), built from the pre-serialized head, since it runs for every streamed token."""
        if self.chat:
            delta = f'"delta": {{"content": {json.dumps(text, ensure_ascii=False)}}}' if text else '"delta": {}'
        else:
            delta = f'"text": {json.dumps(text, ensure_ascii=False)}'
        reason = "null" if finish_reason is None else json.dumps(finish_reason)
        ids = f', "token_ids": [{", ".join(map(str, token_ids))}]' if self.return_token_ids else ""
        usage_ = ', "usage": null' if include_usage else ""        # OpenAI: null on every chunk but the last
        return f'{self._event_head}{index}, {delta}, "logprobs": null, "finish_reason": {reason}{ids}}}]{usage_}}}\n\n'

    def choice_event(self, index: int, delta: dict | str, token_ids: list[int], finish_reason: str | None,
                     include_usage: bool, logprobs: dict | None = None, prompt_logprobs: list | None = None) -> str:
        """The SSE event of a chunk that carries more than text (logprobs, tool_calls, vLLM's
        prompt_logprobs): the chunk of _chunk with those filled in."""
        body = self._chunk(index, delta, token_ids, finish_reason, include_usage)
        choice = body["choices"][0]
        choice["logprobs"] = logprobs
        if prompt_logprobs is not None:
            choice["prompt_logprobs"] = prompt_logprobs
        return sse(body)

    def _chunk(self, index: int, delta: dict | str, token_ids: list[int], finish_reason: str | None,
               include_usage: bool) -> dict:
        if self.chat:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("chat.completion.chunk", [choice])
        else:
            choice = {"index": index, "text": delta, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("text_completion", [choice])
        if self.return_token_ids:
            choice["token_ids"] = token_ids
        if include_usage:
            body["usage"] = None                 # OpenAI: null on every chunk but the last
        return body

    def usage_chunk(self, usage_: dict) -> dict:
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
        body["usage"] = usage_
        return body
