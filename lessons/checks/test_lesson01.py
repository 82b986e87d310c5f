"""Lesson 01: parameter counts and KV bytes per token, against HuggingFace's own model."""

import json
import os

import pytest
import torch

LESSON = "01"

QWEN3_0_6B = {"vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True,
              "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000,
              "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}


def hf_count(config: dict) -> int:
    from transformers import Qwen3Config, Qwen3ForCausalLM
    with torch.device("meta"):
        return Qwen3ForCausalLM(Qwen3Config(**config)).num_parameters()


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("tied", [False, True])
def test_count_parameters_equals_huggingfaces_count(impl, tiny_ckpt, tied):
    with open(os.path.join(tiny_ckpt, "config.json")) as f:
        config = json.load(f)
    config["tie_word_embeddings"] = tied
    assert impl.count_parameters(config) == hf_count(config)


@pytest.mark.readme("Build it")
def test_count_parameters_of_qwen3_0_6b_shape(impl):
    assert impl.count_parameters(QWEN3_0_6B) == hf_count(QWEN3_0_6B)


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("dtype_bytes", [2, 4])
def test_kv_bytes_per_token_counts_kv_heads_not_query_heads(impl, dtype_bytes):
    # Qwen3-0.6B: 28 layers x 8 KV heads x 128 dims x (K and V) = 57,344 values a token
    assert impl.kv_bytes_per_token(QWEN3_0_6B, dtype_bytes) == 28 * 8 * 128 * 2 * dtype_bytes
    gqa4 = dict(QWEN3_0_6B, num_key_value_heads=4)
    assert impl.kv_bytes_per_token(gqa4, dtype_bytes) == 28 * 4 * 128 * 2 * dtype_bytes
