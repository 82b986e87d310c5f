"""Lesson 02: the baseline. Tokenize with the checkpoint's HuggingFace tokenizer and run HF's greedy
generation yourself: the tokens every later lesson must reproduce.

`model_dir` is a HuggingFace checkpoint directory (config.json, model.safetensors, tokenizer.json).
Check: python lessons/check.py 02
"""


def tokenize(model_dir: str, text: str) -> list[int]:
    """The token ids of `text` from the checkpoint's own tokenizer (transformers.AutoTokenizer), with
    no special tokens added: the ids a model sees for a plain prompt.
    (lessons/02_hf_baseline/README.md, "Build it")"""
    raise NotImplementedError("lesson 02: tokenize (see README, 'Build it')")


def hf_greedy(model_dir: str, prompt: str, max_new_tokens: int) -> list[int]:
    """The max_new_tokens ids that transformers.AutoModelForCausalLM (float32, CPU) generates greedily
    after `prompt` (tokenized as `tokenize` does): only the new tokens, not the prompt, and exactly
    max_new_tokens of them, even if the model produces its end-of-sequence token on the way."""
    raise NotImplementedError("lesson 02: hf_greedy (see README, 'Build it')")
