"""Incremental detokenization: one sequence's new tokens -> the text a stream may send now
(LLM.stream, and the server's engine loop).

Decoding all of a sequence's output after every step costs O(length) per token; instead each step
decodes a short window (vLLM's prefix_offset / read_offset scheme): the tokens already turned into
text give the context, the new tokens give the new text.

What stays true, so the concatenated deltas equal `LLMEngine.output_text(seq)` at the end:
- Text ending in "\\ufffd" (a UTF-8 character split across tokens) is held back until it completes.
- A tail that could be the start of a stop string is held back: stop strings are never sent.
- When the sequence finishes, the rest comes from `engine.output_text(seq)`, the engine's one rule
  for the final text (special tokens skipped, a stop string and what follows cut off).
- Without a tokenizer (skip_tokenizer_init) the text is "", as `output_text` says: only token ids go out.
"""

from __future__ import annotations

from aios.engine.llm_engine import LLMEngine
from aios.engine.sequence import Sequence


def stop_prefix_len(text: str, stop_strings: list[str]) -> int:
    """Length of the longest tail of text that is a proper prefix of some stop string."""
    longest = 0
    for stop in stop_strings:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class IncrementalDetokenizer:
    def __init__(self, engine: LLMEngine, seq: Sequence) -> None:
        self.engine, self.seq = engine, seq
        self.prefix_offset = 0      # output tokens [prefix_offset, read_offset) are the decode context
        self.read_offset = 0        # output tokens before read_offset are in self.text
        self.text = ""              # decoded so far (complete characters only)
        self.sent = ""              # the part of the text already handed to the client

    def _decode(self, ids: list[int]) -> str:
        return self.engine.tokenizer.decode(ids, skip_special_tokens=True)

    def step(self) -> str:
        """The text to send after the sequence's newest tokens ('' when all of it is held back)."""
        if self.engine.tokenizer is None:
            return ""
        if self.seq.is_finished:
            final = self.engine.output_text(self.seq)
            delta = final[len(self.sent):] if final.startswith(self.sent) else ""
            self.sent = final
            return delta
        window = self.seq.output_token_ids_since(self.prefix_offset)     # not the whole output: O(window)
        prefix_text = self._decode(window[:self.read_offset - self.prefix_offset])
        new_text = self._decode(window)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text):]
            self.prefix_offset, self.read_offset = self.read_offset, self.prefix_offset + len(window)
        safe_end = len(self.text) - stop_prefix_len(self.text, self.seq.sampling_params.stop_strings)
        delta = self.text[len(self.sent):safe_end]
        self.sent += delta
        return delta
