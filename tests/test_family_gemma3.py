"""Gemma 3 (text) against HF's Gemma3ForCausalLM: sliding and global layers interleaved (window 12,
prompts up to five windows long), two RoPE bases, (1 + weight) norms, GeGLU, the scaled embedding,
query_pre_attn_scalar and the final logit cap; the 4.5x config format; TP=2."""

import json
import os
import shutil

import pytest
import torch
from family_checks import (
    ENGINE_SETTINGS,
    assert_decode_logits_match_hf,
    assert_gpu_greedy_matches_hf,
    assert_greedy_matches_hf_twice,
    assert_logits_match_hf,
    hf_greedy,
)
from test_model_vs_hf import all_token_logits

from aios import LLM
from aios.config import ModelConfig
from aios.utils.tiny_sliding_checkpoints import make_gemma3_checkpoint
from helpers import greedy, random_prompts

WINDOW = 12
PROMPTS = random_prompts(512, [3, 11, 12, 13, 30, 61], seed=31)     # below, at and past the window
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def gemma_ckpt(tmp_path_factory) -> str:
    return make_gemma3_checkpoint(str(tmp_path_factory.mktemp("tiny-gemma3")), sliding_window=WINDOW)


@pytest.fixture(scope="module")
def expected(gemma_ckpt):
    return hf_greedy(gemma_ckpt, PROMPTS, MAX_TOKENS)


def edited_copy(src: str, dst: str, edit) -> str:
    shutil.copytree(src, dst)
    with open(os.path.join(dst, "config.json")) as f:
        raw = json.load(f)
    edit(raw)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(raw, f)
    return dst


def test_layers_alternate_sliding_and_global_with_one_rope_table_per_base(gemma_ckpt):
    llm = LLM(gemma_ckpt, device="cpu", dtype="float32")
    model = llm.model_runner.model.model
    attns = [layer.self_attn.attn for layer in model.layers]
    assert [a.sliding_window for a in attns] == [WINDOW, None, WINDOW, None]
    local, full = model.rotary_embs["sliding_attention"], model.rotary_embs["full_attention"]
    assert [a.rotary_emb for a in attns] == [local, full, local, full]
    assert attns[0].scale == 24 ** -0.5                      # query_pre_attn_scalar, not head_dim (32)


@pytest.mark.parametrize("block_size", [4, 16])
def test_logits_match_hf_in_fp32_with_prompts_past_the_window(gemma_ckpt, block_size):
    assert_logits_match_hf(gemma_ckpt, PROMPTS, kvcache_block_size=block_size)


@pytest.mark.parametrize("block_size", [4, 16])
def test_decode_step_logits_match_hf_as_the_window_slides(gemma_ckpt, block_size):
    prompts = random_prompts(512, [40, 40, 40], seed=7)      # prefill 5 tokens, then 35 decode steps
    assert_decode_logits_match_hf(gemma_ckpt, prompts, prefill_len=5, kvcache_block_size=block_size)


@pytest.mark.parametrize("settings", list(ENGINE_SETTINGS.values()), ids=list(ENGINE_SETTINGS))
def test_greedy_tokens_equal_hf_past_the_window(gemma_ckpt, expected, settings):
    assert_greedy_matches_hf_twice(gemma_ckpt, PROMPTS, expected, MAX_TOKENS, **settings)


def test_preemption_really_happens_in_the_tiny_pool(gemma_ckpt, expected):
    llm = assert_greedy_matches_hf_twice(gemma_ckpt, PROMPTS, expected, MAX_TOKENS,
                                         **ENGINE_SETTINGS["preemption"])
    assert llm.stats()["num_preemptions"] > 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_and_mostly_agrees_with_fp32(gemma_ckpt, dtype):
    ref = all_token_logits(LLM(gemma_ckpt, device="cpu", dtype="float32"), PROMPTS)
    half = all_token_logits(LLM(gemma_ckpt, device="cpu", dtype=dtype), PROMPTS)
    for a, b in zip(ref, half):
        assert b.dtype == getattr(torch, dtype) and not b.isnan().any()
        assert (a.argmax(-1) == b.float().argmax(-1)).float().mean().item() > 0.8


def test_untied_sharded_checkpoint_without_logit_cap_matches_hf(tmp_path):
    path = make_gemma3_checkpoint(str(tmp_path / "g"), tie_word_embeddings=False, final_logit_softcapping=None,
                                  sliding_window_pattern=3, num_layers=3, num_shards=2, seed=4)
    llm = LLM(path, device="cpu", dtype="float32", kvcache_block_size=8)
    assert llm.model_runner.model.lm_head.weight is not llm.model_runner.model.model.embed_tokens.weight
    assert greedy(llm, PROMPTS, MAX_TOKENS) == hf_greedy(path, PROMPTS, MAX_TOKENS)


def test_transformers_4_5x_config_format_parses_to_the_same_model_config(gemma_ckpt, tmp_path):
    def to_4_5x(raw):      # as gemma-3-1b's config.json: top-level RoPE bases, a pattern, no layer_types
        rope = raw.pop("rope_parameters")
        raw.pop("layer_types")
        raw["rope_theta"] = rope["full_attention"]["rope_theta"]
        raw["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        raw["rope_scaling"] = None
        raw["sliding_window_pattern"] = 2
    old = edited_copy(gemma_ckpt, str(tmp_path / "old"), to_4_5x)
    assert ModelConfig.from_dir(old) == ModelConfig.from_dir(gemma_ckpt)


@pytest.mark.parametrize("field, value", [
    ("attn_logit_softcapping", 50.0), ("hidden_activation", "gelu"), ("use_bidirectional_attention", True),
    ("attention_bias", True), ("rope_scaling", {"rope_type": "linear", "factor": 8.0}),
    ("layer_types", ["chunked_attention"] * 4), ("sliding_window", None),
])
def test_config_fields_that_change_the_math_are_refused_by_name(gemma_ckpt, tmp_path, field, value):
    path = edited_copy(gemma_ckpt, str(tmp_path / "g"), lambda raw: raw.__setitem__(field, value))
    with pytest.raises(ValueError, match=field):
        ModelConfig.from_dir(path)


def test_multimodal_gemma3_is_refused_naming_its_architecture(gemma_ckpt, tmp_path):
    def to_multimodal(raw):
        raw.update(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3")
    path = edited_copy(gemma_ckpt, str(tmp_path / "mm"), to_multimodal)
    with pytest.raises(ValueError, match="Gemma3ForConditionalGeneration.*not supported"):
        ModelConfig.from_dir(path)


@pytest.mark.slow
def test_tp2_greedy_tokens_equal_hf(gemma_ckpt, expected):
    with LLM(gemma_ckpt, device="cpu", dtype="float32", tensor_parallel_size=2, kvcache_block_size=4,
             num_kvcache_blocks=24) as llm:
        assert greedy(llm, PROMPTS, MAX_TOKENS) == expected
        assert greedy(llm, PROMPTS, MAX_TOKENS) == expected               # prefix-cache hits
        assert llm.stats()["num_preemptions"] > 0


@pytest.mark.gpu
def test_gpu_triton_cuda_graphs_and_async_scheduling_equal_hf(gemma_ckpt, expected):
    assert_gpu_greedy_matches_hf(gemma_ckpt, PROMPTS, expected, MAX_TOKENS)
