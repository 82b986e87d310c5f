"""What the engine hands back besides token ids: the scores of tokens (vLLM's `Logprob`).

A request's output dict (LLMEngine.output) carries, when its SamplingParams ask for them:
- "logprobs": one dict per output token, {token id: Logprob}, holding the sampled token and the
  top-N tokens of that position (N = SamplingParams.logprobs);
- "prompt_logprobs": one entry per prompt token: None for the first (nothing precedes it), then
  {token id: Logprob} with the prompt's own token and the top-N (N = prompt_logprobs);
- "cumulative_logprob": the sum of the sampled tokens' logprobs.
The logprobs are those of the model's distribution (log_softmax of the fp32 logits, before
temperature, penalties, logit_bias or top-k/top-p), as vLLM reports by default; a structured-output
request's grammar mask is applied first, so its disallowed tokens have -inf (as in vLLM).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Logprob:
    logprob: float
    rank: int                          # 1 = the most likely token of its position
    decoded_token: str | None = None   # its text, where the engine has a tokenizer
