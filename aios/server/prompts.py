"""Prompts to token ids on the API side, off the event loop and off the engine loop.

Tokenizing a long text, or applying a chat template, takes time: 3.5 s for a 4 MB prompt. Done in
the engine loop it stalled every stream in the batch; done on the event loop it would stall every
connection. So the API process keeps a tokenizer of its own (a copy of the engine's in a thread
runner, loaded from the model directory in process mode) and runs it in a small thread pool; the
engine loop gets token ids and only validates them (LLMEngine.validate).

What stays true:
- A text prompt longer than max_model_len x (the longest token's characters) cannot fit and is
  refused before it is tokenized (`max_prompt_chars`).
- Token ids that reach the engine loop are in the vocabulary (LLMEngine.add_request would raise
  after a request's first sequences were added: all or nothing is checked here).
- The ids of a prompt are those LLMEngine.tokenize / LLM.apply_chat_template give (tests compare
  HTTP results with LLM.generate and LLM.chat).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from jinja2 import TemplateError

from aios.server.protocol import NO_TOKENIZER, APIError, ChatCompletionRequest, CompletionRequest

# NFC, the normalizer of Qwen's tokenizers, composes at most 3 code points into one (Hangul L+V+T)
NORMALIZER_SLACK = 3


def max_token_chars(tokenizer) -> int:
    """An upper bound on the characters of text one token covers: a vocabulary entry's length (a
    byte-level BPE token has one character per byte, a SentencePiece one spells its text)."""
    longest = max(map(len, tokenizer.get_vocab()), default=1)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return longest * (NORMALIZER_SLACK if getattr(backend, "normalizer", None) is not None else 1)


class PromptTokenizer:
    """Token ids of a request's prompts, computed in `num_threads` threads of the API process."""

    def __init__(self, tokenizer, vocab_size: int, max_model_len: int, num_threads: int = 2) -> None:
        self.tokenizer, self.vocab_size, self.max_model_len = tokenizer, vocab_size, max_model_len
        self.max_prompt_chars = max_model_len * max_token_chars(tokenizer) if tokenizer is not None else 0
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="aios-tokenize") if tokenizer else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def token_ids(self, body: CompletionRequest | ChatCompletionRequest, chat: bool) -> list[list[int]]:
        """One list of token ids per prompt, or an APIError (400) naming the field at fault."""
        if chat:
            conversation, tools = body.conversation(), body.template_tools()
            chars = sum(len(m["content"]) + len(json.dumps(m.get("tool_calls") or "", ensure_ascii=False))
                        for m in conversation) + len(json.dumps(tools or "", ensure_ascii=False))
            self._refuse_longer_than_fits(chars, "messages")
            return [await self._run(self._apply_chat_template, conversation, tools)]
        prompts = body.prompts()
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                self._refuse_longer_than_fits(len(prompt), "prompt" if len(prompts) == 1 else f"prompt[{i}]")
        ids = [await self._run(self._encode, p) if isinstance(p, str) else p for p in prompts]
        for i, p in enumerate(ids):
            bad = [t for t in p if not 0 <= t < self.vocab_size]
            if bad:
                raise APIError(400, f"prompt token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})"
                               + (f" (prompt {i})" if len(ids) > 1 else ""), param="prompt")
        return ids

    def _refuse_longer_than_fits(self, chars: int, where: str) -> None:
        if self.tokenizer is not None and chars > self.max_prompt_chars:
            raise APIError(400, f"{where} has {chars} characters: more than fit in max_model_len "
                                f"{self.max_model_len} tokens of at most {self.max_prompt_chars // self.max_model_len} "
                                "characters each", param=where.split("[")[0])

    async def _run(self, fn, *args) -> list[int]:
        if self.tokenizer is None:
            raise APIError(400, f"{NO_TOKENIZER}: send prompts as token ids", param="prompt")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))    # as LLMEngine.tokenize

    def _apply_chat_template(self, conversation: list[dict], tools: list[dict] | None = None) -> list[int]:
        """As LLM.apply_chat_template (with `tools`, OpenAI's form, where the request has them); a
        template's own errors are the request's. A template that renders no tools is a 400."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise APIError(400, "the model's tokenizer has no chat template: use /v1/completions", param="messages")
        ids = self._render(conversation, tools)
        if tools and ids == self._render(conversation, None):
            raise APIError(400, "the model's chat template does not render tools (its output is the same with "
                                "and without them): the model would never see them", param="tools")
        return ids

    def _render(self, conversation: list[dict], tools: list[dict] | None) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(conversation, tools=tools, add_generation_prompt=True,
                                                     tokenize=True)
        except (TemplateError, ValueError, TypeError) as e:
            raise APIError(400, f"the chat template refused the messages: {e}", param="messages") from e
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
