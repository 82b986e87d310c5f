"""Model shapes for benchmarks: the config.json of published checkpoints, written without weights.

Speed does not depend on weight values, so a benchmark writes only config.json (+ generation_config.json)
and each engine fills random weights at load: AIOS `load_format="dummy"`, vLLM `load_format="dummy"`.
Each shape is the checkpoint's config.json as published on the Hub (the fields that change the
model, with their `architectures` / `model_type`, so each engine's registry builds that family);
`--model DIR` uses a real checkpoint instead.

`num_params` counts the parameters a shape's config implies (what the published size names);
`num_active_params` the ones one token reads (MoE: only its top-k experts).
"""

from __future__ import annotations

import copy
import json
import os
import shutil

_QWEN3 = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False, hidden_act="silu",
              rms_norm_eps=1e-6, rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=40960,
              torch_dtype="bfloat16", vocab_size=151936, bos_token_id=151643, eos_token_id=151645, head_dim=128,
              use_cache=True, use_sliding_window=False, sliding_window=None, max_window_layers=28,
              attention_dropout=0.0, initializer_range=0.02)

# meta-llama/Llama-3.1-8B(-Instruct): llama3 RoPE scaling, 128k vocabulary, GQA with 8 KV heads
_LLAMA_3_1_8B = dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False,
                     attention_dropout=0.0, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
                     hidden_act="silu", hidden_size=4096, initializer_range=0.02, intermediate_size=14336,
                     max_position_embeddings=131072, mlp_bias=False, num_attention_heads=32, num_hidden_layers=32,
                     num_key_value_heads=8, pretraining_tp=1, rms_norm_eps=1e-5,
                     rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=8192, rope_type="llama3"),
                     rope_theta=500000.0, tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True,
                     vocab_size=128256)

# Qwen/Qwen3-30B-A3B: 48 layers, 128 experts of width 768, 8 routed per token, normalized top-k
_QWEN3_30B_A3B = dict(_QWEN3, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", decoder_sparse_step=1,
                      hidden_size=2048, intermediate_size=6144, max_window_layers=48, mlp_only_layers=[],
                      moe_intermediate_size=768, norm_topk_prob=True, num_attention_heads=32, num_experts=128,
                      num_experts_per_tok=8, num_hidden_layers=48, num_key_value_heads=4, output_router_logits=False,
                      router_aux_loss_coef=0.001, tie_word_embeddings=False)

# Qwen/Qwen2.5-7B-Instruct: q/k/v biases, 4 KV heads; use_sliding_window false (its sliding_window unused)
_QWEN2_5_7B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", attention_dropout=0.0,
                   bos_token_id=151643, eos_token_id=151645, hidden_act="silu", hidden_size=3584,
                   initializer_range=0.02, intermediate_size=18944, max_position_embeddings=32768,
                   max_window_layers=28, num_attention_heads=28, num_hidden_layers=28, num_key_value_heads=4,
                   rms_norm_eps=1e-6, rope_scaling=None, rope_theta=1000000.0, sliding_window=131072,
                   tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True, use_sliding_window=False,
                   vocab_size=152064)

# mistralai/Mistral-7B-v0.3: 32k vocabulary, no sliding window (null: every layer attends to all)
_MISTRAL_7B = dict(architectures=["MistralForCausalLM"], model_type="mistral", attention_dropout=0.0, bos_token_id=1,
                   eos_token_id=2, hidden_act="silu", hidden_size=4096, initializer_range=0.02,
                   intermediate_size=14336, max_position_embeddings=32768, num_attention_heads=32,
                   num_hidden_layers=32, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=1000000.0,
                   sliding_window=None, tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True,
                   vocab_size=32768)

SHAPES: dict[str, dict] = {
    "qwen3-0.6b": dict(_QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-1.7b": dict(_QWEN3, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-4b": dict(_QWEN3, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-8b": dict(_QWEN3, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=False),
    "qwen3-14b": dict(_QWEN3, hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40,
                      num_key_value_heads=8, tie_word_embeddings=False),
    "qwen3-32b": dict(_QWEN3, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                      num_key_value_heads=8, tie_word_embeddings=False),
    "llama-3.1-8b": _LLAMA_3_1_8B,
    "qwen3-30b-a3b": _QWEN3_30B_A3B,
    "qwen2.5-7b": _QWEN2_5_7B,
    "mistral-7b": _MISTRAL_7B,
}

# The tokenizer a shape directory can carry when a workload needs one (structured output needs the
# tokens' bytes): the bundled model's, 4,096 tokens, so prompts then draw ids below 4,096.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def shape_config(shape: str, **overrides) -> dict:
    """The config.json contents of a named shape (overrides replace its sizes, e.g. for a tiny test)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    return copy.deepcopy({**SHAPES[shape], **overrides})


def write_shape(shape: str, root: str, *, with_tokenizer: bool = False, **overrides) -> str:
    """Write config.json (+ generation_config.json, + the bundled tokenizer if asked) for a named
    shape under root/shape (root/shape-tok with the tokenizer, so the two never mix); return the dir."""
    config = shape_config(shape, **overrides)
    path = os.path.join(root, shape + ("-tok" if with_tokenizer else ""))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    eos = config["eos_token_id"]
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config.get("bos_token_id"), "eos_token_id": eos}, f)
    for name in TOKENIZER_FILES:
        target = os.path.join(path, name)
        if with_tokenizer:
            from aios.assets import default_model_path
            shutil.copyfile(os.path.join(default_model_path(), name), target)
        elif os.path.exists(target):
            os.remove(target)
    return path


def _config(shape_or_config: str | dict) -> dict:
    return shape_config(shape_or_config) if isinstance(shape_or_config, str) else shape_or_config


def _counts(c: dict) -> tuple[int, int, int]:
    """(parameters outside the MLPs, MLP parameters of all experts, MLP parameters one token reads)."""
    h, L, v = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    d = c.get("head_dim") or h // heads
    attn = h * d * (heads * 2 + kv * 2)
    if c["model_type"] == "qwen2":                              # q/k/v biases
        attn += d * (heads + 2 * kv)
    elif c.get("attention_bias"):                               # Llama's attention_bias: q/k/v/o
        attn += d * (heads + 2 * kv) + h
    if c["model_type"] in ("qwen3", "qwen3_moe"):               # per-head RMSNorm of q and k
        attn += 2 * d
    other = L * (attn + 2 * h) + v * h * (1 if c.get("tie_word_embeddings") else 2) + h
    dense = 3 * h * c["intermediate_size"]
    experts = c.get("num_experts") or c.get("num_local_experts") or 0
    if not experts:
        return other, L * dense, L * dense
    dense_layers = set(c.get("mlp_only_layers") or [])
    step = c.get("decoder_sparse_step", 1)
    sparse = [i for i in range(L) if i not in dense_layers and (i + 1) % step == 0]
    expert = 3 * h * c["moe_intermediate_size"]
    router = h * experts
    all_mlp = (L - len(sparse)) * dense + len(sparse) * (experts * expert + router)
    active_mlp = (L - len(sparse)) * dense + len(sparse) * (c["num_experts_per_tok"] * expert + router)
    return other, all_mlp, active_mlp


def num_params(shape_or_config: str | dict) -> int:
    """Every parameter of the shape (a name from SHAPES or a config.json dict)."""
    other, all_mlp, _ = _counts(_config(shape_or_config))
    return other + all_mlp


def num_active_params(shape_or_config: str | dict) -> int:
    """The parameters one token's forward reads (MoE: its top-k experts and the router; dense: all)."""
    other, _, active_mlp = _counts(_config(shape_or_config))
    return other + active_mlp


def num_params_read(shape_or_config: str | dict, num_seqs: int) -> int:
    """The parameters a decode step of num_seqs sequences reads, on average under random routing:
    every weight outside the experts, and of an MoE layer's experts the share the batch routes to,
    1 - (1 - k/E)^num_seqs (lesson 16). Dense: num_params at any batch; MoE: num_active_params at
    one sequence, nearly num_params from ~64 on."""
    other, all_mlp, active_mlp = _counts(_config(shape_or_config))
    if all_mlp == active_mlp:
        return other + all_mlp
    hit = 1.0 - (1.0 - active_mlp / all_mlp) ** max(1, num_seqs)
    return other + round(all_mlp * hit)
