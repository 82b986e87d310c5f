"""Lesson 17: constrained decoding. Before the sampler, every token the constraint does not allow
gets -inf; the allowed set is a bitmask, 32 tokens to an int32 word.

Shapes: logits [num_rows, vocab]; bitmask [n, ceil(vocab / 32)] int32 (bit j of word w is token
32 * w + j; bit 31 is the sign bit); rows [n] (the logits row each bitmask row masks).
Check: python lessons/check.py 17
"""

from __future__ import annotations

import torch


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """In place: logits[rows[i], t] = -inf wherever bit t of bitmask[i] is clear; every set bit, every
    row not in `rows` and every column keeps its value. (lessons/17_constrained_decoding/README.md,
    "Build it")"""
    raise NotImplementedError("lesson 17: apply_token_bitmask (see README, 'Build it')")


def choice_token_mask(tokenizer, choices: list[str], prefix_token_ids: list[int], vocab_size: int,
                      eos_token_id: int) -> torch.Tensor:
    """The tokens allowed next when the output so far is `prefix_token_ids` and the whole output must
    be one of `choices`: a bool tensor [vocab_size], True at token t when the text so far plus t's
    text (tokenizer.decode([t])) is still the start of some choice (t's text not empty), and at
    eos_token_id when the text so far already is a choice. Tokens past the tokenizer's are False.
    (lessons/17_constrained_decoding/README.md, "Build it")"""
    raise NotImplementedError("lesson 17: choice_token_mask (see README, 'Build it')")
