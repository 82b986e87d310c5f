"""The body of POST /v1/completions (CompletionRequest): one prompt or a batch of them, as text or
token ids; OpenAI's integer `logprobs` and `echo`.

What stays true: `prompt` is a string, a non-empty list of strings, a list of token ids or a list
of such lists, else a 400; `prompts()` is always a list, one entry per prompt. With echo and
logprobs N, the prompt is scored with the same N (vLLM's rule), unless prompt_logprobs says otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from aios.server.errors import APIError, check_unicode
from aios.server.sampling_request import NO_TOKENIZER, NOT_ASKED_COMMON, SamplingRequest

NOT_ASKED_COMPLETIONS = {**NOT_ASKED_COMMON, "suffix": (None, ""), "top_logprobs": (None, 0),
                         "max_completion_tokens": (None,)}          # a chat field; max_tokens here

Prompt = str | list[int]


class CompletionRequest(SamplingRequest):
    NOT_ASKED: ClassVar[dict[str, tuple]] = NOT_ASKED_COMPLETIONS

    prompt: Any = Field(description="a string, a list of strings, a list of token ids, or a list of those")
    max_tokens: int | None = 16               # OpenAI's default for completions
    logprobs: int | None = None               # top-N per token (the sampled one's always)
    echo: bool = False                        # the prompt first: its text, and with logprobs its logprobs

    @field_validator("prompt", mode="after")
    @classmethod
    def _check_prompt(cls, prompt: Any) -> Any:
        def is_ids(p: Any) -> bool:
            return isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p)

        ok = (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and (
            all(isinstance(p, str) for p in prompt) or is_ids(prompt) or all(is_ids(p) for p in prompt))))
        if not ok:
            raise ValueError("prompt must be a string, a list of strings, a list of token ids, "
                             "or a list of token-id lists (non-empty)")
        if isinstance(prompt, str):
            check_unicode(prompt, "prompt")
        elif isinstance(prompt[0], str):
            for i, p in enumerate(prompt):
                check_unicode(p, f"prompt[{i}]")
        return prompt

    def prompts(self) -> list[Prompt]:
        """One entry per prompt: the batch forms become lists, a single prompt a list of one."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_logprobs(self) -> tuple[int | None, int | None]:
        # vLLM's rule: echo with logprobs N also scores the prompt, with the same N
        prompt_logprobs = self.prompt_logprobs
        if prompt_logprobs is None and self.echo and self.logprobs is not None:
            prompt_logprobs = self.logprobs
        return self.logprobs, prompt_logprobs

    def refuse_text_without_tokenizer(self) -> None:
        if any(isinstance(p, str) for p in self.prompts()):
            raise APIError(400, f"{NO_TOKENIZER}: send prompts as token ids", param="prompt")
        super().refuse_text_without_tokenizer()
