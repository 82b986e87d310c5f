"""Mistral against HF's MistralForCausalLM: a 12-token sliding window with prompts up to five
windows long, v0.3's full attention (sliding_window null), tied embeddings, and TP=2."""

import json
import os
import shutil

import pytest
from family_checks import (
    ENGINE_SETTINGS,
    assert_decode_logits_match_hf,
    assert_gpu_greedy_matches_hf,
    assert_greedy_matches_hf_twice,
    assert_logits_match_hf,
    hf_greedy,
)

from aios import LLM
from aios.config import ModelConfig
from aios.utils.tiny_sliding_checkpoints import make_mistral_checkpoint
from helpers import greedy, random_prompts

WINDOW = 12
PROMPTS = random_prompts(512, [3, 11, 12, 13, 30, 61], seed=21)     # below, at and past the window
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def mistral_ckpt(tmp_path_factory) -> str:
    return make_mistral_checkpoint(str(tmp_path_factory.mktemp("tiny-mistral")), sliding_window=WINDOW)


@pytest.fixture(scope="module")
def expected(mistral_ckpt):
    return hf_greedy(mistral_ckpt, PROMPTS, MAX_TOKENS)


def test_config_reads_the_sliding_window(mistral_ckpt):
    config = ModelConfig.from_dir(mistral_ckpt)
    assert (config.model_type, config.sliding_window) == ("mistral", WINDOW)


@pytest.mark.parametrize("block_size", [4, 16])
def test_logits_match_hf_in_fp32_with_prompts_past_the_window(mistral_ckpt, block_size):
    assert_logits_match_hf(mistral_ckpt, PROMPTS, kvcache_block_size=block_size)


@pytest.mark.parametrize("block_size", [4, 16])
def test_decode_step_logits_match_hf_as_the_window_slides(mistral_ckpt, block_size):
    prompts = random_prompts(512, [40, 40, 40], seed=7)      # prefill 5 tokens, then 35 decode steps
    assert_decode_logits_match_hf(mistral_ckpt, prompts, prefill_len=5, kvcache_block_size=block_size)


@pytest.mark.parametrize("settings", list(ENGINE_SETTINGS.values()), ids=list(ENGINE_SETTINGS))
def test_greedy_tokens_equal_hf_past_the_window(mistral_ckpt, expected, settings):
    assert_greedy_matches_hf_twice(mistral_ckpt, PROMPTS, expected, MAX_TOKENS, **settings)


def test_preemption_really_happens_in_the_tiny_pool(mistral_ckpt, expected):
    llm = assert_greedy_matches_hf_twice(mistral_ckpt, PROMPTS, expected, MAX_TOKENS,
                                         **ENGINE_SETTINGS["preemption"])
    assert llm.stats()["num_preemptions"] > 0


def test_v03_full_attention_with_tied_embeddings_and_shards_matches_hf(tmp_path):
    path = make_mistral_checkpoint(str(tmp_path / "m"), sliding_window=None, tie_word_embeddings=True,
                                   num_shards=2, seed=3)
    llm = LLM(path, device="cpu", dtype="float32", kvcache_block_size=8)
    assert llm.model_runner.model.lm_head.weight is llm.model_runner.model.model.embed_tokens.weight
    assert all(layer.self_attn.attn.sliding_window is None for layer in llm.model_runner.model.model.layers)
    assert greedy(llm, PROMPTS, MAX_TOKENS) == hf_greedy(path, PROMPTS, MAX_TOKENS)


def test_a_window_longer_than_max_model_len_runs_full_attention(mistral_ckpt):
    llm = LLM(mistral_ckpt, device="cpu", dtype="float32", max_model_len=WINDOW)
    assert all(layer.self_attn.attn.sliding_window is None for layer in llm.model_runner.model.model.layers)


@pytest.mark.parametrize("field, value", [("hidden_act", "gelu"), ("attention_bias", True),
                                          ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}),
                                          ("sliding_window", 0)])
def test_config_fields_that_change_the_math_are_refused_by_name(mistral_ckpt, tmp_path, field, value):
    path = str(tmp_path / "m")
    shutil.copytree(mistral_ckpt, path)
    with open(os.path.join(path, "config.json")) as f:
        raw = json.load(f)
    raw[field] = value
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(raw, f)
    with pytest.raises(ValueError, match=field):
        ModelConfig.from_dir(path)


@pytest.mark.slow
def test_tp2_greedy_tokens_equal_hf(mistral_ckpt, expected):
    with LLM(mistral_ckpt, device="cpu", dtype="float32", tensor_parallel_size=2, kvcache_block_size=4,
             num_kvcache_blocks=24) as llm:
        assert greedy(llm, PROMPTS, MAX_TOKENS) == expected
        assert greedy(llm, PROMPTS, MAX_TOKENS) == expected               # prefix-cache hits
        assert llm.stats()["num_preemptions"] > 0


@pytest.mark.gpu
def test_gpu_triton_cuda_graphs_and_async_scheduling_equal_hf(mistral_ckpt, expected):
    assert_gpu_greedy_matches_hf(mistral_ckpt, PROMPTS, expected, MAX_TOKENS)
