"""Lesson 02: tokenize with the checkpoint's tokenizer and run HF's greedy generation yourself."""

import os

import pytest
import torch

LESSON = "02"
PROMPT = "def add(a, b): return a + b"


def greedy_by_hand(model_dir: str, ids: list[int], n: int) -> list[int]:
    """The oracle: HF's forward pass, argmax of the last position, no generate() and no cache."""
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens = list(ids)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(hf(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(ids):]


@pytest.mark.readme("Build it")
def test_tokenize_gives_the_tokenizer_files_ids_without_special_tokens(impl, tiny_ckpt):
    from tokenizers import Tokenizer
    raw = Tokenizer.from_file(os.path.join(tiny_ckpt, "tokenizer.json"))
    for text in (PROMPT, "The king said", " leading space and\nnew line"):
        assert impl.tokenize(tiny_ckpt, text) == raw.encode(text, add_special_tokens=False).ids
    assert raw.decode(impl.tokenize(tiny_ckpt, PROMPT)) == PROMPT


@pytest.mark.readme("Build it")
def test_hf_greedy_equals_argmax_of_hfs_forward_step_by_step(impl, tiny_ckpt):
    from tokenizers import Tokenizer
    ids = Tokenizer.from_file(os.path.join(tiny_ckpt, "tokenizer.json")).encode(PROMPT, add_special_tokens=False).ids
    got = impl.hf_greedy(tiny_ckpt, PROMPT, 12)
    assert len(got) == 12, "only the new tokens, exactly max_new_tokens of them"
    assert got == greedy_by_hand(tiny_ckpt, ids, 12)
