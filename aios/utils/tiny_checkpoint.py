"""Tiny random HuggingFace checkpoints for tests and the learner's lesson checks: a Qwen3 (or another
family's model, `family=`) built by transformers (the oracle's own code), saved with save_pretrained,
with a small real BPE tokenizer (chat template included). Nothing is downloaded: everything is made
here, in seconds, on a CPU.
"""

from __future__ import annotations

import json
import os

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "Once upon a time there was a little fox who lived in the green forest.",
    "The quick brown dog jumps over the lazy cat, and the cat runs away.",
    "Attention is all you need: queries, keys and values make a transformer.",
    "An inference engine schedules requests, pages its KV cache and batches decodes.",
    "The king said to the queen: tomorrow we ride to the sea at dawn.",
    "Numbers like 12345 and 67890 and symbols like !?.,;:()[]{} appear in text.",
]


# family -> (transformers config class, model class)
FAMILY_CLASSES = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
}


def write_tokenizer(path: str, vocab_size: int) -> None:
    """A byte-level BPE trained on a little English and Python text, filled up to vocab_size."""
    import inspect
    import json as json_module

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4 + inspect.getsource(json_module.decoder).splitlines(), trainer)
    missing = vocab_size - tok.get_vocab_size()
    tok.add_tokens([AddedToken(f"<|extra_{i}|>", special=False) for i in range(missing)])
    assert tok.get_vocab_size() == vocab_size
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)


def make_checkpoint(path: str, *, vocab_size: int = 512, hidden_size: int = 64, intermediate_size: int = 128,
                    num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 32,
                    tie_word_embeddings: bool = False, max_position_embeddings: int = 1024,
                    dtype: str = "float32", seed: int = 0, num_shards: int = 1,
                    family: str = "qwen3", **config_fields) -> str:
    """A random HF model of `family` ("qwen3", "llama", "qwen2": FAMILY_CLASSES) saved with
    save_pretrained, plus a real BPE tokenizer. config_fields go to the family's config class as
    they are (rope_scaling, attention_bias, ...); Qwen3 is built as it always was."""
    import transformers

    config_name, model_name = FAMILY_CLASSES[family]
    os.makedirs(path, exist_ok=True)
    write_tokenizer(path, vocab_size)
    from transformers import AutoTokenizer
    eos = AutoTokenizer.from_pretrained(path).eos_token_id
    fields = dict(config_fields)
    if "rope_parameters" not in fields:        # 5.x's rope_parameters carries its own rope_theta
        fields.setdefault("rope_theta", 10000.0)
    if family != "qwen2":                      # Qwen2's head_dim is hidden_size // num_heads, always
        fields.setdefault("head_dim", head_dim)
    config = getattr(transformers, config_name)(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
        eos_token_id=eos, bos_token_id=None, pad_token_id=None, **fields)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():                      # larger weights than HF's init, so logits are not flat
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.08)
    model = model.to(getattr(torch, dtype))
    size = None
    if num_shards > 1:
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        size = total // num_shards + 1
    model.save_pretrained(path, max_shard_size=size) if size else model.save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos}, f)
    return path
