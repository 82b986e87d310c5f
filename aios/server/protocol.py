"""The OpenAI wire format on the way in: request bodies, their SamplingParams, and error bodies.
This module is the server's one import of them; they live one concept a file:

    sampling_request.py         SamplingRequest: the fields both endpoints share -> SamplingParams
                                (strict types, NOT_ASKED, Unicode and finite numbers)
    completion_request.py       CompletionRequest: the body of POST /v1/completions
    chat_completion_request.py  ChatCompletionRequest: the body of POST /v1/chat/completions
    errors.py                   APIError, the error body, the checks that name the field at fault

- What the server maps onto SamplingParams (aios/sampling_params.py has the meanings): n, best_of,
  temperature, top_p, top_k, min_p, seed, stop, stop_token_ids, ignore_eos, max_tokens, the three
  penalties, logit_bias (OpenAI's string keys become token ids, checked against the vocabulary),
  min_tokens, bad_words, include_stop_str_in_output; logprobs (completions: an int, with `echo`
  also the prompt's; chat: `logprobs: true` + `top_logprobs`), vLLM's prompt_logprobs; one output
  constraint (response_format, structured_outputs, guided_*, or a forcing tool_choice:
  aios/server/structured_outputs.py, tools.py). The engine may still refuse a field it does not
  apply yet (LLMEngine.validate): a 400 naming it.
- vLLM's extensions are accepted as extra body fields: top_k, min_p, ignore_eos, stop_token_ids,
  return_token_ids (each choice also carries its output token ids).
- Every error leaves as `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
"""

from __future__ import annotations

from aios.server.chat_completion_request import ChatCompletionRequest
from aios.server.completion_request import CompletionRequest, Prompt
from aios.server.errors import APIError, check_unicode, param_of, validation_error
from aios.server.sampling_request import NO_TOKENIZER, SamplingRequest, StreamOptions, means_not_asked

__all__ = ["NO_TOKENIZER", "REQUEST_FIELDS", "APIError", "ChatCompletionRequest", "CompletionRequest", "Prompt",
           "SamplingRequest", "StreamOptions", "check_unicode", "means_not_asked", "param_of", "validation_error"]

# every field a request may name: a ValueError of the engine starting with one is about it
REQUEST_FIELDS = frozenset(CompletionRequest.model_fields) | frozenset(ChatCompletionRequest.model_fields)
