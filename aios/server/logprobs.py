"""Scores of tokens in OpenAI's two wire formats, and vLLM's prompt_logprobs.

The engine loop hands over each position's scores as the engine keeps them (a TokenLogprobs of
aios/layers/logprobs.py: token_ids[0] is the scored token, with its logprob and rank; token_ids[1:]
the top-N, most likely first); they are turned into text here, on the API side, with the API's own
tokenizer, so the engine loop decodes nothing for them.

    completions (legacy)   {"tokens": [str], "token_logprobs": [float | None],
                            "top_logprobs": [{str: float} | None], "text_offset": [int]}
                           top_logprobs holds the top-N and the scored token (up to N + 1 entries);
                           with echo the prompt's tokens come first, the very first with None.
    chat                   {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token",
                            "logprob", "bytes"}] (exactly the top-N)}]}
    prompt_logprobs (vLLM) [None, {"<token id>": {"logprob", "rank", "decoded_token"}}, ...]

A token's text is its own decode (a byte-level piece of a multi-byte character decodes to
"\\ufffd"); its `bytes` are its real bytes (byte-level BPE's token string mapped back), so a
client can join them into the text. -inf (a logprob float32 cannot hold) is sent as -9999.0, as
vLLM does: JSON has no infinity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

NEG_INF_LOGPROB = -9999.0


class Scores(Protocol):
    """One position's scores (aios.layers.logprobs.TokenLogprobs)."""

    token_ids: list[int]
    logprobs: list[float]
    rank: int


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else NEG_INF_LOGPROB


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet backwards: the character that stands for each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenTexts:
    """Each token id's text and bytes, computed once per id (one per server: it owns its cache)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._text: dict[int, str] = {}
        self._bytes: dict[int, list[int]] = {}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = decoder is not None and "ByteLevel" in repr(decoder)
        self._byte_decoder = _byte_decoder() if self._byte_level else {}
        self._added = {i for i in getattr(tokenizer, "added_tokens_decoder", {})} if tokenizer is not None else set()

    def text(self, token_id: int) -> str:
        text = self._text.get(token_id)
        if text is None:
            text = "" if self.tokenizer is None else self.tokenizer.decode([token_id])
            self._text[token_id] = text
        return text

    def decode(self, token_ids: list[int]) -> str:
        return "" if self.tokenizer is None else self.tokenizer.decode(token_ids)

    def bytes(self, token_id: int) -> list[int]:
        out = self._bytes.get(token_id)
        if out is None:
            out = None
            if self._byte_level and token_id not in self._added:
                piece = self.tokenizer.convert_ids_to_tokens(token_id)
                if isinstance(piece, str) and all(c in self._byte_decoder for c in piece):
                    out = [self._byte_decoder[c] for c in piece]
            if out is None:
                out = list(self.text(token_id).encode("utf-8"))
            self._bytes[token_id] = out
        return out


def top_entries(scores: Scores, top_n: int) -> list[tuple[int, float]]:
    """The top-N (token id, logprob) of a position, most likely first."""
    return list(zip(scores.token_ids[1:1 + top_n], scores.logprobs[1:1 + top_n]))


def chat_content(scores: Sequence[Scores], top_n: int, texts: TokenTexts) -> list[dict]:
    """choices[i].logprobs.content entries of these output tokens."""
    def entry(token_id: int, logprob: float) -> dict:
        return {"token": texts.text(token_id), "logprob": _finite(logprob), "bytes": texts.bytes(token_id)}

    return [{**entry(s.token_ids[0], s.logprobs[0]), "top_logprobs": [entry(t, lp) for t, lp in top_entries(s, top_n)]}
            for s in scores]


class CompletionLogprobs:
    """The legacy logprobs object of one choice, built a piece at a time (a stream's chunks each
    carry their tokens' part; text_offset runs on across them)."""

    def __init__(self, texts: TokenTexts, top_n: int) -> None:
        self.texts, self.top_n, self.offset = texts, top_n, 0

    def piece(self, token_ids: Sequence[int], scores: Sequence[Scores | None]) -> dict:
        """The object for these tokens (scores[i] None: token_ids[i] has no score: a prompt's first)."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token_id, s in zip(token_ids, scores):
            text = self.texts.text(token_id)
            out["tokens"].append(text)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
            if s is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            out["token_logprobs"].append(_finite(s.logprobs[0]))
            top = {self.texts.text(t): _finite(lp) for t, lp in top_entries(s, self.top_n)}
            top.setdefault(text, _finite(s.logprobs[0]))
            out["top_logprobs"].append(top)
        return out


def merge_completion_logprobs(pieces: list[dict]) -> dict | None:
    if not pieces:
        return None
    return {key: [v for p in pieces for v in p[key]] for key in ("tokens", "token_logprobs", "top_logprobs",
                                                                 "text_offset")}


def vllm_prompt_logprobs(scores: Sequence[Scores | None], texts: TokenTexts) -> list[dict | None]:
    """vLLM's prompt_logprobs: per prompt token None (the first) or {str(id): {logprob, rank, decoded_token}}."""
    out: list[dict | None] = []
    for s in scores:
        if s is None:
            out.append(None)
            continue
        d = {str(s.token_ids[0]): {"logprob": _finite(s.logprobs[0]), "rank": s.rank,
                                   "decoded_token": texts.text(s.token_ids[0])}}
        for rank, (t, lp) in enumerate(zip(s.token_ids[1:], s.logprobs[1:]), start=1):
            d.setdefault(str(t), {"logprob": _finite(lp), "rank": rank, "decoded_token": texts.text(t)})
        out.append(d)
    return out
