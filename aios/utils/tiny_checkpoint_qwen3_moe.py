"""A tiny random HuggingFace Qwen3-MoE checkpoint (tests, lesson 16): built by transformers' own
Qwen3MoeForCausalLM, saved with save_pretrained (per-expert tensors, as published), with the same
small BPE tokenizer as aios/utils/tiny_checkpoint.py. Nothing is downloaded."""

from __future__ import annotations

import json
import os

import torch

from aios.utils.tiny_checkpoint import write_tokenizer


def make_qwen3_moe_checkpoint(path: str, *, vocab_size: int = 512, hidden_size: int = 64,
                              intermediate_size: int = 128, moe_intermediate_size: int = 32, num_experts: int = 8,
                              num_experts_per_tok: int = 2, norm_topk_prob: bool = True, num_layers: int = 2,
                              num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 32,
                              decoder_sparse_step: int = 1, mlp_only_layers: list[int] | None = None,
                              tie_word_embeddings: bool = False, max_position_embeddings: int = 1024,
                              dtype: str = "float32", seed: int = 0, num_shards: int = 1) -> str:
    """A random Qwen3MoeForCausalLM (HF) saved with save_pretrained, plus a real BPE tokenizer."""
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    os.makedirs(path, exist_ok=True)
    write_tokenizer(path, vocab_size)
    eos = AutoTokenizer.from_pretrained(path).eos_token_id
    config = Qwen3MoeConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                            moe_intermediate_size=moe_intermediate_size, num_experts=num_experts,
                            num_experts_per_tok=num_experts_per_tok, norm_topk_prob=norm_topk_prob,
                            decoder_sparse_step=decoder_sparse_step, mlp_only_layers=mlp_only_layers or [],
                            num_hidden_layers=num_layers, num_attention_heads=num_heads,
                            num_key_value_heads=num_kv_heads, head_dim=head_dim,
                            max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
                            rope_theta=10000.0, eos_token_id=eos, bos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config)
    with torch.no_grad():                      # larger weights than HF's init, so logits are not flat
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.08)
    model = model.to(getattr(torch, dtype))
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(path, **({"max_shard_size": total // num_shards + 1} if num_shards > 1 else {}))
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos}, f)
    return path
