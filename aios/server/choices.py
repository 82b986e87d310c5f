"""One choice on the API side, for requests that want more than text: its logprobs in OpenAI's
format, its text through a tool-call parser, the echoed prompt. (A plain request skips all this:
app.py writes its chunks with ResponseBuilder.delta_event, the fast path.)

ChoiceOutput.chunk(delta) gives what one stream chunk of the choice carries; a whole response is
the same chunks merged (ChoiceOutput.merged), so streamed and whole responses always agree.

What stays true:
- A chunk's logprobs are those of the output tokens the Delta brought (chat: content entries;
  completions: the legacy lists, text_offset running on from the previous chunk).
- With echo (completions), the choice's first chunk starts with the prompt's text, and with
  logprobs its tokens' scores (the first token's None) before the output's.
- finish_reason "stop" becomes "tool_calls" when the choice made a call (OpenAI's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aios.sampling_params import SamplingParams
from aios.server.logprobs import (
    CompletionLogprobs,
    TokenTexts,
    chat_content,
    merge_completion_logprobs,
    vllm_prompt_logprobs,
)
from aios.server.stream import Delta
from aios.server.tool_calls import ToolCallDelta, ToolParser, merge_tool_call_deltas


@dataclass
class Chunk:
    """What one chunk of a choice carries besides its index."""

    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: dict | None = None              # the chunk's part, in the endpoint's format
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_logprobs: list | None = None       # vLLM's format, on the first chunk when asked

    def chat_delta(self) -> dict:
        delta: dict = {}
        if self.content:
            delta["content"] = self.content
        if self.tool_calls:
            delta["tool_calls"] = [d.as_openai() for d in self.tool_calls]
        return delta


@dataclass
class RequestOutputs:
    """What the request asked for, shared by its choices."""

    chat: bool
    texts: TokenTexts
    logprobs: int | None = None               # SamplingParams.logprobs (top-N); None: no logprobs
    prompt_logprobs: int | None = None        # vLLM's prompt_logprobs field, as asked
    echo_texts: list[str] | None = None       # completions echo: each prompt's text
    echo_logprobs: bool = False               # echo with logprobs: the prompt's scores lead the logprobs
    new_tool_parser: object = None            # () -> ToolParser | None
    n: int = 1                                # choices per prompt: choice i is prompt i // n's
    prompt_token_ids: list[list[int]] | None = None   # per prompt (for echo's logprobs)

    @classmethod
    def of(cls, body, chat: bool, params: SamplingParams, prompt_token_ids: list[list[int]],
           texts: TokenTexts) -> RequestOutputs | None:
        """What a request (a CompletionRequest or ChatCompletionRequest) wants besides text, or None
        when it wants text only (the fast path)."""
        echo = not chat and body.echo
        new_tool_parser = body.new_tool_parser if chat and body.tool_mode != "none" else None
        if params.logprobs is None and params.prompt_logprobs is None and not echo and new_tool_parser is None:
            return None
        echo_texts = None
        if echo:
            echo_texts = [p if isinstance(p, str) else texts.decode(ids)
                          for p, ids in zip(body.prompts(), prompt_token_ids)]
        return cls(chat, texts, params.logprobs, body.prompt_logprobs, echo_texts,
                   echo and params.prompt_logprobs is not None, new_tool_parser, params.n, prompt_token_ids)

    def choice(self, index: int, keep: bool = True) -> ChoiceOutput:
        """keep: remember the chunks for merged() (a whole response); a stream needs not."""
        return ChoiceOutput(self, index, keep)


class ChoiceOutput:
    def __init__(self, request: RequestOutputs, index: int, keep: bool = True) -> None:
        self.request, self.index, self.keep = request, index, keep
        self.parser: ToolParser | None = request.new_tool_parser() if request.new_tool_parser else None
        self.completion_logprobs = CompletionLogprobs(request.texts, request.logprobs or 0)
        self.started = False
        self.chunks: list[Chunk] = []

    def chunk(self, delta: Delta) -> Chunk:
        """The chunk of one Delta (kept for merged())."""
        req, out = self.request, Chunk(token_ids=list(delta.token_ids))
        text = delta.text
        echo_pieces = []
        if not self.started:
            self.started = True
            if req.echo_texts is not None:
                text = req.echo_texts[self.index // req.n] + text
                if req.echo_logprobs and delta.prompt_logprobs is not None:
                    prompt_token_ids = req.prompt_token_ids[self.index // req.n]
                    echo_pieces.append(self.completion_logprobs.piece(prompt_token_ids, delta.prompt_logprobs))
            if req.prompt_logprobs is not None and delta.prompt_logprobs is not None:
                out.prompt_logprobs = vllm_prompt_logprobs(delta.prompt_logprobs, req.texts)
        if self.parser is not None:
            content, calls = self.parser.feed(text)
            if delta.finish_reason is not None:
                rest, more = self.parser.finish()
                content, calls = content + rest, calls + more
            out.content, out.tool_calls = content, calls
        else:
            out.content = text
        if req.logprobs is not None and delta.logprobs is not None:
            if req.chat:
                out.logprobs = {"content": chat_content(delta.logprobs, req.logprobs, req.texts)}
            else:
                pieces = echo_pieces + [self.completion_logprobs.piece(delta.token_ids, delta.logprobs)]
                out.logprobs = merge_completion_logprobs(pieces)
        elif echo_pieces:
            out.logprobs = merge_completion_logprobs(echo_pieces)
        reason = delta.finish_reason
        if reason == "stop" and self.parser is not None and self.parser.num_calls:
            reason = "tool_calls"
        out.finish_reason = reason
        if self.keep:
            self.chunks.append(out)
        return out

    def merged(self) -> dict:
        """The whole choice: content (None for a chat reply that only calls tools), tool_calls,
        logprobs, finish_reason, token_ids, prompt_logprobs."""
        chunks = self.chunks
        content = "".join(c.content for c in chunks)
        calls = merge_tool_call_deltas([d for c in chunks for d in c.tool_calls])
        logprobs = None
        if self.request.logprobs is not None or any(c.logprobs for c in chunks):
            if self.request.chat:
                logprobs = {"content": [e for c in chunks if c.logprobs for e in c.logprobs["content"]]}
            else:
                logprobs = merge_completion_logprobs([c.logprobs for c in chunks if c.logprobs])
        return {"content": content if (content or not calls) else None, "tool_calls": calls or None,
                "logprobs": logprobs, "finish_reason": chunks[-1].finish_reason if chunks else None,
                "token_ids": [t for c in chunks for t in c.token_ids],
                "prompt_logprobs": next((c.prompt_logprobs for c in chunks if c.prompt_logprobs is not None), None)}
