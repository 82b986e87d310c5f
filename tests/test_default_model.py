"""The bundled default model (aios/assets): a real HF Qwen3 that writes English, and aios decodes it as HF does.

- It loads with plain transformers (Qwen3ForCausalLM, AutoTokenizer) and is small enough to ship.
- Its greedy continuation of an English prompt is made of corpus words (a regression to noise fails).
- aios's greedy tokens equal HF's greedy tokens (both float32 on the CPU).
"""

import json
import os
import re

import pytest
import torch

from aios.assets import DEFAULT_MODEL_DIR, default_model_path

PROMPTS = ["In the beginning", "And the king said unto", "Once upon a time"]
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def hf_model():
    from transformers import Qwen3ForCausalLM

    return Qwen3ForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32).eval()


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def test_default_model_is_a_small_hf_qwen3_with_a_chat_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    assert default_model_path() == DEFAULT_MODEL_DIR and os.path.isabs(DEFAULT_MODEL_DIR)
    with open(os.path.join(DEFAULT_MODEL_DIR, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "qwen3" and config["architectures"] == ["Qwen3ForCausalLM"]
    size = sum(os.path.getsize(os.path.join(DEFAULT_MODEL_DIR, f)) for f in os.listdir(DEFAULT_MODEL_DIR))
    assert size < 20e6, f"bundled model is {size / 1e6:.1f} MB"
    assert isinstance(tokenizer, PreTrainedTokenizerFast) and tokenizer.eos_token == "<|endoftext|>"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_greedy_continuation_is_made_of_corpus_words(tokenizer, hf_model):
    with open(os.path.join(DEFAULT_MODEL_DIR, "vocab_words.txt")) as f:
        known = set(f.read().split())
    prompt_ids = tokenizer("And it came to pass").input_ids
    text = tokenizer.decode(hf_greedy(hf_model, prompt_ids, 64), skip_special_tokens=True)
    words = [w for w in (re.sub(r"[^a-z']", "", w.lower()).strip("'") for w in text.split()) if w]
    assert len(words) >= 20, text
    share = sum(w in known for w in words) / len(words)
    assert share >= 0.9, f"only {share:.0%} of the words are English corpus words: {text!r}"


def test_aios_greedy_tokens_equal_hf_greedy_tokens(tokenizer, hf_model):
    from aios import LLM, SamplingParams

    llm = LLM(DEFAULT_MODEL_DIR, device="cpu", dtype="float32")
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=MAX_TOKENS), use_tqdm=False)
    for prompt, out in zip(PROMPTS, outs):
        expected = hf_greedy(hf_model, tokenizer(prompt).input_ids, MAX_TOKENS)
        assert out["token_ids"] == expected, prompt
