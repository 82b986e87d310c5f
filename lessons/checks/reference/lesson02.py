"""Reference for lesson 02: HuggingFace transformers itself, called as lessons/02_hf_baseline/
run_lesson02.py calls it (`hf_generate`); aios's side of the comparison is aios/llm.py."""

from __future__ import annotations

import torch


def tokenize(model_dir: str, text: str) -> list[int]:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir).encode(text, add_special_tokens=False)


def hf_greedy(model_dir: str, prompt: str, max_new_tokens: int) -> list[int]:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([tokenize(model_dir, prompt)])
    with torch.no_grad():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                          min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return out[0, x.shape[1]:].tolist()
