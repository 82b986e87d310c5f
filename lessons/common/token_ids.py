"""The lessons' prompts, and a stand-in tokenizer for a model directory that has none.

scripts/run_lessons.py runs the lessons on a random-weight checkpoint of a real shape (config.json
and weights, no tokenizer files): there the prompts become TokenIds' ids and outputs print as <id>.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import zlib

# Prompts in the style the bundled model (aios-tiny-bible, trained on the KJV) knows.
PROMPTS = [
    "And the king said",
    "In the beginning",
    "And it came to pass, when",
    "The LORD is my shepherd",
    "Then Jesus answered and said unto them",
    "And the people of Israel",
    "Blessed are the meek",
    "Now the serpent was",
    "And Moses went up",
    "Wisdom is the principal thing",
    "And David said to Saul",
    "Thus saith the LORD",
    "And the angel of the LORD",
    "Hear, O Israel",
    "And they came unto Jericho",
    "For God so loved the world",
]


def has_tokenizer(model_dir: str) -> bool:
    """Whether the checkpoint ships tokenizer files (a random-weight checkpoint of a real shape, as
    scripts/run_lessons.py writes, has only config.json and weights)."""
    return any(os.path.isfile(os.path.join(model_dir, name))
               for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


class TokenIds:
    """Stands in for the tokenizer of a model directory that has none. encode gives each word of a
    text one fixed token id (a hash of the word, never a special token), so every run feeds the
    model the same prompts, of about the lengths the bundled tokenizer gives; decode shows ids as
    <id>, a run of one id as <id>xN. The ids mean nothing: this is only enough to drive a
    random-weight model."""

    def __init__(self, model_dir: str) -> None:
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        self.vocab_size = config["vocab_size"]
        self.special = set()
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            ids = config.get(key)
            self.special |= {ids} if isinstance(ids, int) else set(ids or [])

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        for word in text.split():
            i = zlib.crc32(word.encode()) % self.vocab_size
            while i in self.special:
                i = (i + 1) % self.vocab_size
            ids.append(i)
        return ids

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [f"<{int(i)}>" for i in ids]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        runs: list[list] = []                                   # [id, count]
        for i in map(int, ids):
            if runs and runs[-1][0] == i:
                runs[-1][1] += 1
            else:
                runs.append([i, 1])
        return "".join(f"<{i}>" + (f"x{n}" if n > 1 else "") for i, n in runs)

    def __len__(self) -> int:
        return self.vocab_size


@functools.cache
def _token_ids(model_dir: str) -> TokenIds:
    return TokenIds(model_dir)


def tokenizer(args: argparse.Namespace):
    """The checkpoint's tokenizer (transformers.AutoTokenizer), or TokenIds if it has none."""
    if args.skip_tokenizer_init:
        return _token_ids(args.model)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(args.model)


def prompt(args: argparse.Namespace, text: str) -> str | list[int]:
    """A prompt for aios.LLM: the text itself, or its TokenIds ids when the model has no tokenizer
    (the engine then runs with skip_tokenizer_init=True and takes token ids only)."""
    return _token_ids(args.model).encode(text) if args.skip_tokenizer_init else text


def prompts(args: argparse.Namespace, n: int) -> list:
    """n prompts: PROMPTS, repeated as needed (see prompt())."""
    return [prompt(args, PROMPTS[i % len(PROMPTS)]) for i in range(n)]


def tokenize(llm, text: str) -> list[int]:
    """llm.tokenize(text), or TokenIds' ids when the engine runs without a tokenizer."""
    return _token_ids(llm.config.model).encode(text) if llm.tokenizer is None else llm.tokenize(text)


def completion(args: argparse.Namespace, prompt: str | list[int], output: dict) -> str:
    """A prompt followed by what the engine generated for it (token ids without a tokenizer)."""
    if isinstance(prompt, str):
        return prompt + output["text"]
    tok = _token_ids(args.model)
    return f"{tok.decode(prompt)} -> {tok.decode(output['token_ids'])}"
