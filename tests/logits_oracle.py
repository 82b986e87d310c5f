"""HuggingFace as the oracle of logits processing and scores (tests/test_logits_processors.py,
tests/test_logprobs.py and their GPU twin): its fp32 log_softmax, its logits processors, and OpenAI's
presence / frequency penalties written as one."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, SequenceBiasLogitsProcessor

from aios import SamplingParams
from helpers import random_prompts

MAX_TOKENS = 16
PROMPTS = random_prompts(512, [6, 23, 40], seed=31)        # the penalty cases' prompts


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's presence / frequency penalties over the generated tokens (not the prompt)."""

    def __init__(self, prompt_len: int, presence: float, frequency: float) -> None:
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = input_ids[:, self.prompt_len:]
        counts = torch.zeros_like(scores).scatter_add_(1, out, torch.ones_like(out, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0)


def hf_greedy(hf, prompt: list[int], processors: list, max_new_tokens: int = MAX_TOKENS, **kw) -> list[int]:
    """HF's greedy continuation of one prompt under `processors` (fp32)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=0, logits_processor=LogitsProcessorList(processors), **kw)
    return out[0, len(prompt):].tolist()


# case -> (SamplingParams fields, prompt -> HF's logits processors that do the same)
CASES = {
    "repetition_penalty": (dict(repetition_penalty=1.8), lambda p: [RepetitionPenaltyLogitsProcessor(1.8)]),
    "repetition_penalty_below_1": (dict(repetition_penalty=0.5), lambda p: [RepetitionPenaltyLogitsProcessor(0.5)]),
    "presence_penalty": (dict(presence_penalty=2.0), lambda p: [OpenAIPenalties(len(p), 2.0, 0.0)]),
    "frequency_penalty": (dict(frequency_penalty=1.5), lambda p: [OpenAIPenalties(len(p), 0.0, 1.5)]),
    "negative_presence_and_frequency": (dict(presence_penalty=-1.0, frequency_penalty=-0.5),
                                        lambda p: [OpenAIPenalties(len(p), -1.0, -0.5)]),
    "logit_bias": (dict(logit_bias={7: 4.0, 300: 3.0, 99: -100.0}),
                   lambda p: [SequenceBiasLogitsProcessor([[[7], 4.0], [[300], 3.0], [[99], -100.0]])]),
}


def hf_logprobs(hf, token_ids: list[int]) -> torch.Tensor:
    """[len - 1, vocab]: row j is log_softmax of HF's fp32 logits at position j (it scores token j + 1)."""
    with torch.no_grad():
        logits = hf(torch.tensor([token_ids], device=hf.device)).logits[0, :-1].float().cpu()
    return logits.log_softmax(dim=-1)


def assert_scores(entry: dict, scored: int, want: torch.Tensor, n: int, tol: float) -> None:
    """entry ({token id: Logprob}) scores token `scored` and holds the top-n of the oracle's row `want`."""
    items = list(entry.items())
    assert items[0][0] == scored, "the scored token comes first"
    for token_id, lp in items:
        assert abs(lp.logprob - float(want[token_id])) < tol, "every logprob is the oracle's"
    value, rank = float(want[scored]), items[0][1].rank
    # its rank counts the tokens at least as likely, within fp32 noise of the oracle
    assert int((want > value + tol).sum()) + 1 <= rank <= int((want >= value - tol).sum())
    top = items[1:] if len(items) == n + 1 else items      # a scored token in the top-n is listed once
    assert len(top) == n
    by_rank = sorted(top, key=lambda kv: kv[1].rank)
    assert [lp.rank for _, lp in by_rank] == list(range(1, n + 1))
    assert all(a[1].logprob >= b[1].logprob for a, b in zip(by_rank, by_rank[1:])), "rank 1 is the most likely"
    if n:
        nth = sorted(want.tolist(), reverse=True)[n - 1]
        assert min(float(want[t]) for t, _ in top) >= nth - tol, "the top-n are the n most likely tokens"


def check_logprobs_against_hf(hf, out: dict, params: SamplingParams, tol: float = 1e-4) -> None:
    """out's logprobs / prompt logprobs / cumulative_logprob are those of HF's model `hf` (fp32)."""
    prompt, output = out["prompt_token_ids"], out["token_ids"]
    want = hf_logprobs(hf, prompt + output)
    assert len(out["logprobs"]) == len(output)
    for k, (token, entry) in enumerate(zip(output, out["logprobs"])):
        assert_scores(entry, token, want[len(prompt) - 1 + k], params.logprobs, tol)
    assert out["cumulative_logprob"] == pytest.approx(sum(e[t].logprob for e, t in zip(out["logprobs"], output)))
    if params.prompt_logprobs is not None:
        assert len(out["prompt_logprobs"]) == len(prompt) and out["prompt_logprobs"][0] is None
        for j in range(1, len(prompt)):
            assert_scores(out["prompt_logprobs"][j], prompt[j], want[j - 1], params.prompt_logprobs, tol)
