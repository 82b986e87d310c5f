"""What a request does to its logits before the sampler: penalties, logit_bias, min_tokens, bad_words
(issue 20; lesson 12). vLLM's names and meanings, applied per row on the device.

    logits [rows, vocab] --bad words, min_tokens, logit_bias--> --repetition, frequency, presence--> sampler

- logit_bias: {token id: bias} added to that token's logit.
- min_tokens: the request's stop tokens (EOS unless ignore_eos, and stop_token_ids) get -inf until
  it has min_tokens output tokens.
- bad_words (vLLM's rule): each word is tokenized as it is and with a leading space; a word of one
  token is always masked, a longer word's last token is masked where the output ends with the
  word's other tokens.
- repetition_penalty (CTRL, HF's): the logit of every token in the prompt or the output is divided
  by it where positive, multiplied by it where negative.
- frequency_penalty / presence_penalty (OpenAI's): subtracted from a token's logit once per
  occurrence in the output / once if it occurs at all.
In that order (vLLM's: masks and bias, then the penalties). Greedy rows get them too (they move
the argmax); temperature, top-k/p and min-p come after, in the sampler.

Where the work is done: what a request asks is resolved once, at admission (`LogitsProcessing`, on
the Sequence); each step `logits_processor_tensors` turns the sampling rows that ask into a few
flat arrays on the host (one upload for the integers, one for the floats), and
`apply_logits_processors` applies them with batch-wide torch ops on a copy of the logits: sparse
(row, token) additions for the bias and the masks, a gather and a scatter over the (row, token)
entries of the prompt and output tokens for the penalties. A step where no row asks does nothing
here at all.

Async scheduling: a row's newest output token may still be on the device (a PLACEHOLDER on the
host) when the step launches. The penalties count it and the bad words match it on the device,
from the previous step's sampled tokens, as the model runner fills input_ids.

Invariants (tests/test_logits_processors.py checks them against HF's logits processors):
- Only the rows that ask change; every other row's logits, and so its tokens (a seeded row's too),
  are those it would have alone.
- The raw logits are not modified: the logprobs are computed from them after the sampler runs.
- The penalties touch only the (row, token) entries of tokens that occur: their cost grows with the
  tokens of the rows that ask, not with rows x vocabulary (one memset of their counts aside).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from aios.sampling_params import SamplingParams

if TYPE_CHECKING:
    from aios.engine.sequence import Sequence

_logits_processing = operator.attrgetter("logits_processing")


@dataclass(frozen=True)
class LogitsProcessing:
    """What one request does to its logits, resolved once from its SamplingParams (`from_params`)."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_tokens: int = 0
    min_tokens_stop_ids: tuple[int, ...] = ()           # masked while fewer than min_tokens are out
    bad_words_token_ids: tuple[tuple[int, ...], ...] = ()
    # the prompt's token ids, kept once for the repetition penalty (None when it is 1 or unknown)
    prompt_token_ids: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    @classmethod
    def from_params(cls, params: SamplingParams, eos_token_ids: list[int], tokenizer, vocab_size: int,
                    prompt_token_ids: list[int] | None = None) -> LogitsProcessing | None:
        """None when the request asks for none of it; a ValueError naming the field for a value
        this engine cannot apply (a token id outside the vocabulary, bad_words without a tokenizer).
        (prompt_token_ids: the request's prompt; None only to validate.)"""
        p = params
        if (p.presence_penalty == 0 and p.frequency_penalty == 0 and p.repetition_penalty == 1
                and not p.logit_bias and p.min_tokens == 0 and not p.bad_words):
            return None
        bias = tuple((p.logit_bias or {}).items())
        for token_id, _ in bias:
            if token_id >= vocab_size:
                raise ValueError(f"logit_bias: token id {token_id} is outside the vocabulary [0, {vocab_size})")
        stop_ids: tuple[int, ...] = ()
        if p.min_tokens > 0:
            stop_ids = tuple(sorted(set(p.stop_token_ids) | (set() if p.ignore_eos else set(eos_token_ids))))
            stop_ids = tuple(t for t in stop_ids if t < vocab_size)   # an id past the logits can never be sampled
        bad: tuple[tuple[int, ...], ...] = ()
        if p.bad_words:
            if tokenizer is None:
                raise ValueError("bad_words need a tokenizer (skip_tokenizer_init=True)")
            bad = tuple(tuple(ids) for ids in bad_words_token_ids(p.bad_words, tokenizer))
            outside = [t for ids in bad for t in ids if not 0 <= t < vocab_size]
            if outside:
                raise ValueError(f"bad_words: token ids {outside[:5]} are outside the vocabulary [0, {vocab_size})")
        prompt = None
        if p.repetition_penalty != 1 and prompt_token_ids is not None:
            prompt = np.asarray(prompt_token_ids, dtype=np.int64)
        return cls(p.presence_penalty, p.frequency_penalty, p.repetition_penalty, bias, p.min_tokens, stop_ids, bad,
                   prompt)


def bad_words_token_ids(bad_words: list[str], tokenizer) -> list[list[int]]:
    """vLLM's tokenization of bad words: each word as it is (left-stripped) and with one leading space,
    the second only where it is a different first token and as many tokens (a new word's token)."""
    out: list[list[int]] = []
    for word in bad_words:
        plain: list[int] | None = None
        for prefix in ("", " "):
            ids = list(tokenizer.encode(prefix + word.lstrip(), add_special_tokens=False))
            if not ids:
                continue
            if plain is None:
                plain = ids
                out.append(ids)
            elif ids[0] != plain[0] and len(ids) == len(plain):
                out.append(ids)
    return out


@dataclass
class LogitsProcessorTensors:
    """One step's logits processing, as device tensors over the rows of its logits."""

    # sparse additions: logit_bias values, and -inf for min_tokens' and bad words' masks
    add_rows: torch.Tensor | None = None         # [k] int64
    add_token_ids: torch.Tensor | None = None    # [k] int64
    add_values: torch.Tensor | None = None       # [k] float32
    # bad words whose prefix ends in the token still in flight: masked where that token is `expected`
    cond_rows: torch.Tensor | None = None        # [c] int64
    cond_token_ids: torch.Tensor | None = None   # [c] int64
    cond_src: torch.Tensor | None = None         # [c] int64: row of the previous step's sampled tokens
    cond_expected: torch.Tensor | None = None    # [c] int64
    # penalties over the rows that ask for one
    penalty_rows: torch.Tensor | None = None     # [r] int64: rows of the logits
    presence: torch.Tensor | None = None         # [r] float32
    frequency: torch.Tensor | None = None        # [r] float32
    repetition: torch.Tensor | None = None       # [r] float32
    # their tokens: m entries in q parts (a row's prompt, for the repetition penalty, then its output)
    seen_token_ids: torch.Tensor | None = None   # [m] int64 (-1: in flight, filled on the device)
    part_rows: torch.Tensor | None = None        # [q] int64: the penalty row of each part
    part_lengths: torch.Tensor | None = None     # [q] int64
    part_is_output: torch.Tensor | None = None   # [q] float32: 1 for output tokens (counted), 0 for prompt
    num_seen: int = 0                            # m (known on the host: no device sync to size by it)
    placeholder_dst: torch.Tensor | None = None  # [p] int64: entries of seen_token_ids in flight ...
    placeholder_src: torch.Tensor | None = None  # [p] int64: ... at this row of the previous step's tokens


def logits_processor_tensors(seqs: list[Sequence], last_row_of: dict[int, int],
                             to_device: Callable[[np.ndarray], torch.Tensor]) -> LogitsProcessorTensors | None:
    """The processing of a step whose sampling rows are `seqs` (row i is seqs[i]), or None when no
    row asks. A token id < 0 is a PLACEHOLDER: the previous step sampled it, at row last_row_of[seq_id]."""
    procs = list(map(_logits_processing, seqs))       # C-speed: a step where none asks costs ~nothing
    if procs.count(None) == len(procs):
        return None
    rows = [i for i, proc in enumerate(procs) if proc is not None]
    add_rows: list[int] = []
    add_ids: list[int] = []
    add_values: list[float] = []
    cond: list[tuple[int, int, int, int]] = []            # (row, token, src, expected)
    pen_rows, pen_values = [], []
    seen_parts, part_row, is_output = [], [], []      # token-id arrays, each with its penalty row and kind
    num_seen, dst, src = 0, [], []
    for i in rows:
        seq = seqs[i]
        proc: LogitsProcessing = seq.logits_processing
        tokens = seq.token_ids                            # its newest entry may be in flight
        num_output = len(tokens) - seq.num_prompt_tokens  # also the index of the token sampled now
        for token_id, bias in proc.logit_bias:
            add_rows.append(i)
            add_ids.append(token_id)
            add_values.append(bias)
        if num_output < proc.min_tokens:
            add_rows += [i] * len(proc.min_tokens_stop_ids)
            add_ids += proc.min_tokens_stop_ids
            add_values += [float("-inf")] * len(proc.min_tokens_stop_ids)
        for word in proc.bad_words_token_ids:
            prefix_len = len(word) - 1                    # matched against the output only (vLLM's)
            if prefix_len > num_output:
                continue
            tail = tokens[len(tokens) - prefix_len:] if prefix_len else []
            if tail and tail[-1] < 0:                     # its last token is in flight: the device decides
                if tail[:-1] == list(word[:prefix_len - 1]):
                    cond.append((i, word[-1], last_row_of[seq.seq_id], word[prefix_len - 1]))
            elif tail == list(word[:prefix_len]):
                add_rows.append(i)
                add_ids.append(word[-1])
                add_values.append(float("-inf"))
        if proc.has_penalties:
            pen_rows.append(i)
            pen_values.append((proc.presence_penalty, proc.frequency_penalty, proc.repetition_penalty))
            if proc.repetition_penalty != 1:              # the prompt counts for the repetition penalty only
                prompt = proc.prompt_token_ids
                if prompt is None:
                    prompt = np.asarray(seq.token_ids[:seq.num_prompt_tokens], dtype=np.int64)
                seen_parts.append(prompt)
                part_row.append(len(pen_rows) - 1)
                is_output.append(False)
                num_seen += len(prompt)
            seen_parts.append(np.asarray(tokens[seq.num_prompt_tokens:], dtype=np.int64))
            part_row.append(len(pen_rows) - 1)
            is_output.append(True)
            num_seen += num_output
            if num_output and tokens[-1] < 0:             # only the newest token can be in flight
                dst.append(num_seen - 1)
                src.append(last_row_of[seq.seq_id])
    ints: dict[str, np.ndarray] = {}
    floats: dict[str, np.ndarray] = {}
    if add_rows:
        ints["add_rows"], ints["add_token_ids"] = np.asarray(add_rows, np.int64), np.asarray(add_ids, np.int64)
        floats["add_values"] = np.asarray(add_values, np.float32)
    if cond:
        for name, column in zip(("cond_rows", "cond_token_ids", "cond_src", "cond_expected"), zip(*cond)):
            ints[name] = np.asarray(column, np.int64)
    if pen_rows:
        ints["penalty_rows"] = np.asarray(pen_rows, np.int64)
        values = np.asarray(pen_values, np.float32)
        floats["presence"], floats["frequency"], floats["repetition"] = values[:, 0], values[:, 1], values[:, 2]
        ints["seen_token_ids"] = seen_parts               # packed straight into the upload: one copy
        ints["part_rows"] = np.asarray(part_row, np.int64)
        ints["part_lengths"] = np.fromiter(map(len, seen_parts), np.int64, len(seen_parts))
        floats["part_is_output"] = np.asarray(is_output, np.float32)
        if dst:
            ints["placeholder_dst"], ints["placeholder_src"] = np.asarray(dst, np.int64), np.asarray(src, np.int64)
    return LogitsProcessorTensors(**_upload_packed(ints, to_device), **_upload_packed(floats, to_device),
                                  num_seen=num_seen)


def _upload_packed(arrays: dict[str, np.ndarray | list[np.ndarray]],
                   to_device: Callable[[np.ndarray], torch.Tensor]) -> dict:
    """Same-dtype arrays (or lists of parts, joined) in one host-to-device copy, handed back as views of it."""
    if not arrays:
        return {}
    parts = [p for a in arrays.values() for p in (a if isinstance(a, list) else [a])]
    flat = to_device(np.concatenate(parts))
    out, start = {}, 0
    for name, a in arrays.items():
        size = sum(map(len, a)) if isinstance(a, list) else a.size
        out[name] = flat[start:start + size]
        start += size
    return out


def apply_logits_processors(logits: torch.Tensor, t: LogitsProcessorTensors,
                            last_tokens: torch.Tensor | None) -> torch.Tensor:
    """A new fp32 tensor of `logits` [rows, vocab] processed as `t` says (logits itself unchanged).
    `last_tokens`: the previous step's sampled tokens on the device (for tokens still in flight)."""
    logits = logits.float() if logits.dtype != torch.float32 else logits.clone()
    if t.add_rows is not None:
        logits.index_put_((t.add_rows, t.add_token_ids), t.add_values, accumulate=True)
    if t.cond_rows is not None:
        hit = last_tokens[t.cond_src] == t.cond_expected
        mask = torch.zeros_like(hit, dtype=logits.dtype).masked_fill_(hit, float("-inf"))
        logits.index_put_((t.cond_rows, t.cond_token_ids), mask, accumulate=True)
    if t.penalty_rows is not None:
        _apply_penalties(logits, t, last_tokens)
    return logits


def _apply_penalties(logits: torch.Tensor, t: LogitsProcessorTensors, last_tokens: torch.Tensor | None) -> None:
    """In place, over the (row, token) entries of the prompt and output tokens only (no pass over
    the vocabulary but one memset for the counts): every entry of the same (row, token) computes the
    same new logit from the same old one, so a plain (non-accumulating) scatter writes it once.
    Nothing here has a data-dependent shape, so nothing waits for the device."""
    tokens = t.seen_token_ids
    if t.placeholder_dst is not None:
        tokens = tokens.clone()
        tokens[t.placeholder_dst] = last_tokens[t.placeholder_src]
    vocab = logits.shape[1]
    seen_index = torch.repeat_interleave(t.part_rows, t.part_lengths, output_size=t.num_seen)    # [m]
    is_output = torch.repeat_interleave(t.part_is_output, t.part_lengths, output_size=t.num_seen)
    flat = t.penalty_rows[seen_index] * vocab + tokens                  # [m] entries of logits.view(-1)
    local = seen_index * vocab + tokens                                 # [m] entries of counts
    counts = torch.zeros(len(t.penalty_rows) * vocab, dtype=torch.float32, device=logits.device)
    counts.index_add_(0, local, is_output)                              # occurrences in the output
    count = counts[local]
    old = logits.view(-1)[flat]
    repetition = t.repetition[seen_index]
    new = torch.where(old > 0, old / repetition, old * repetition)       # CTRL / HF, prompt and output
    new = new - t.frequency[seen_index] * count - t.presence[seen_index] * (count > 0)       # OpenAI
    logits.view(-1)[flat] = new
