"""What a request hands back: its text, tokens, scores and timings (vLLM's RequestOutput, as a dict).

Read-only over a Sequence: nothing here writes request state, so the engine, LLM.generate and the
server's stream (which converts only its new scores each step) can call it at any time. The text
rule lives here once: special tokens skipped, a stop string and what follows cut off; the stream's
detokenizer (detokenizer.py) ends on exactly this text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aios.outputs import Logprob

if TYPE_CHECKING:
    from aios.engine.sequence import Sequence
    from aios.layers.logprobs import TokenLogprobs


def output_text(seq: Sequence, tokenizer) -> str:
    """The generated text: special tokens skipped, a stop string and what follows cut off (with
    include_stop_str_in_output, what follows it only; a stop token's text is then kept too)."""
    if tokenizer is None:
        return ""
    keep_stop = seq.sampling_params.include_stop_str_in_output
    ids = seq.output_token_ids
    if seq.finish_reason == "stop" and isinstance(seq.stop_reason, int) and not keep_stop:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if isinstance(seq.stop_reason, str) and seq.stop_reason in text:
        end = text.find(seq.stop_reason)
        text = text[: end + len(seq.stop_reason) if keep_stop else end]
    return text

def logprob_dicts(entries: list[TokenLogprobs | None], tokenizer) -> list[dict[int, Logprob] | None]:
    """Scores as the API hands them out (aios/outputs.py): one {token id: Logprob} per position,
    the scored token first, then the top-N; decoded_token filled where there is a tokenizer.
    (A stream converts its new entries each step: seq.output_logprobs[start:].)"""
    text: dict[int, str] = {}
    if tokenizer is not None:
        ids = sorted({t for e in entries if e is not None for t in e.token_ids})
        text = dict(zip(ids, tokenizer.batch_decode([[t] for t in ids])))
    out: list[dict[int, Logprob] | None] = []
    for e in entries:
        if e is None:
            out.append(None)
            continue
        d = {e.token_ids[0]: Logprob(e.logprobs[0], e.rank, text.get(e.token_ids[0]))}
        for rank, (t, lp) in enumerate(zip(e.token_ids[1:], e.logprobs[1:]), start=1):
            d[t] = Logprob(lp, rank, text.get(t))      # a sampled token in the top-N: its top-N rank (vLLM's)
        out.append(d)
    return out

def request_output(seq: Sequence, tokenizer) -> dict:
    """One request's output dict: what LLM.generate returns per sample."""
    params = seq.sampling_params
    ttft = None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time
    itl = [b - a for a, b in zip(seq.token_times, seq.token_times[1:])]
    return {
        "request_id": seq.seq_id,
        "text": output_text(seq, tokenizer),
        "token_ids": seq.output_token_ids,
        "prompt_token_ids": seq.prompt_token_ids,
        "finish_reason": seq.finish_reason,
        "num_cached_tokens": seq.num_cached_tokens,
        "logprobs": None if params.logprobs is None else logprob_dicts(seq.output_logprobs, tokenizer),
        "prompt_logprobs": None if params.prompt_logprobs is None else logprob_dicts(seq.prompt_logprobs, tokenizer),
        "cumulative_logprob": seq.cumulative_logprob if seq.num_logprobs is not None else None,
        "metrics": {"ttft_s": ttft, "itl_s": itl, "num_preemptions": seq.num_preemptions},
    }
