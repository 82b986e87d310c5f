"""Tiny random HF Mistral and Gemma 3 (text) checkpoints, the sliding-window families, made like
aios/utils/tiny_checkpoint.py's Qwen3: transformers builds the model, save_pretrained writes it,
write_tokenizer adds a small real BPE tokenizer. Windows are a few tokens, so short test prompts
already run past them.
"""

from __future__ import annotations

import json
import os

import torch

from aios.utils.tiny_checkpoint import write_tokenizer


def _save(model: torch.nn.Module, path: str, eos: int, norm_range: tuple[float, float], seed: int,
          dtype: str, num_shards: int) -> str:
    torch.manual_seed(seed)
    with torch.no_grad():                      # larger weights than HF's init, so logits are not flat
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(*norm_range)
            else:
                p.normal_(0.0, 0.08)
    model = model.to(getattr(torch, dtype))
    if num_shards > 1:
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        model.save_pretrained(path, max_shard_size=total // num_shards + 1)
    else:
        model.save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos}, f)
    return path


def _tokenizer(path: str, vocab_size: int) -> int:
    from transformers import AutoTokenizer

    os.makedirs(path, exist_ok=True)
    write_tokenizer(path, vocab_size)
    return AutoTokenizer.from_pretrained(path).eos_token_id


def make_mistral_checkpoint(path: str, *, sliding_window: int | None = 12, vocab_size: int = 512,
                            hidden_size: int = 64, intermediate_size: int = 128, num_layers: int = 2,
                            num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 32,
                            tie_word_embeddings: bool = False, max_position_embeddings: int = 1024,
                            dtype: str = "float32", seed: int = 0, num_shards: int = 1) -> str:
    """A random MistralForCausalLM (HF); sliding_window=None is v0.3's full attention."""
    from transformers import MistralConfig, MistralForCausalLM

    eos = _tokenizer(path, vocab_size)
    config = MistralConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                           num_hidden_layers=num_layers, num_attention_heads=num_heads,
                           num_key_value_heads=num_kv_heads, head_dim=head_dim,
                           max_position_embeddings=max_position_embeddings, sliding_window=sliding_window,
                           tie_word_embeddings=tie_word_embeddings, rope_theta=10000.0, eos_token_id=eos,
                           bos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    return _save(MistralForCausalLM(config), path, eos, (0.5, 1.5), seed, dtype, num_shards)


def make_gemma3_checkpoint(path: str, *, sliding_window: int = 12, sliding_window_pattern: int = 2,
                           vocab_size: int = 512, hidden_size: int = 64, intermediate_size: int = 128,
                           num_layers: int = 4, num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 32,
                           query_pre_attn_scalar: float = 24, final_logit_softcapping: float | None = 3.0,
                           tie_word_embeddings: bool = True, max_position_embeddings: int = 1024,
                           dtype: str = "float32", seed: int = 0, num_shards: int = 1) -> str:
    """A random Gemma3ForCausalLM (HF, text only): every `sliding_window_pattern`-th layer global,
    the rest sliding; the two RoPE bases, the attention scale and the logit cap all differ from
    the defaults that would hide a mistake (head_dim ** -0.5, one base, no cap)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    eos = _tokenizer(path, vocab_size)
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                              num_hidden_layers=num_layers, num_attention_heads=num_heads,
                              num_key_value_heads=num_kv_heads, head_dim=head_dim,
                              max_position_embeddings=max_position_embeddings, sliding_window=sliding_window,
                              sliding_window_pattern=sliding_window_pattern, rope_theta=1e6,
                              rope_local_base_freq=100.0, query_pre_attn_scalar=query_pre_attn_scalar,
                              final_logit_softcapping=final_logit_softcapping,
                              tie_word_embeddings=tie_word_embeddings, eos_token_id=eos, bos_token_id=None,
                              pad_token_id=None)
    torch.manual_seed(seed)
    return _save(Gemma3ForCausalLM(config), path, eos, (-0.5, 0.5), seed, dtype, num_shards)
