"""Llama 3 (aios/models/llama.py) computes what HF's LlamaForCausalLM computes: fp32 logits and
greedy tokens under every schedule, with llama3 / linear RoPE scaling, biases, tied and sharded
checkpoints, config.json as transformers 4.5x and 5.x write it, and TP; refused fields are errors."""

import dataclasses

import pytest
from family_oracle import (
    GPU_KWARGS,
    SCHEDULES,
    as_transformers_4x,
    config_variant,
    engine_greedy,
    hf_greedy,
    max_logit_error_vs_hf,
    prompts,
)

from aios import LLM
from aios.config import ModelConfig
from aios.utils.tiny_checkpoint import make_checkpoint
from helpers import assert_no_leaked_blocks, greedy

# Llama 3.1's RoPE scaling with its pretraining context cut to 32 tokens, so prompts run past it
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


@pytest.fixture(scope="module")
def llama31(tmp_path_factory) -> str:
    """Llama 3.1 style: llama3 RoPE scaling, rope_theta 5e5, untied, GQA 4 / 2 heads."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-llama31")), family="llama", rope_theta=500000.0,
                           rope_scaling=LLAMA3_ROPE)


@pytest.fixture(scope="module")
def llama32_tied(tmp_path_factory) -> str:
    """Llama 3.2 1B/3B style: tied embeddings, in 2 safetensors shards; no RoPE scaling (3.0)."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-llama32")), family="llama", tie_word_embeddings=True,
                           num_kv_heads=4, head_dim=16, seed=1, num_shards=2)


@pytest.fixture(scope="module")
def llama_biased(tmp_path_factory) -> str:
    """attention_bias and mlp_bias on (q/k/v/o and gate/up/down biases), linear RoPE scaling."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-llama-bias")), family="llama", seed=2,
                           attention_bias=True, mlp_bias=True, rope_scaling={"rope_type": "linear", "factor": 2.0})


@pytest.fixture(scope="module")
def expected(llama31):
    return hf_greedy(llama31, prompts())


def test_llama3_scaled_logits_match_hf_in_fp32_past_the_original_context(llama31):
    assert max_logit_error_vs_hf(llama31) < 1e-4           # prompts up to 70 tokens, original context 32


@pytest.mark.parametrize("kwargs", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_llama_greedy_tokens_equal_hf_under_every_schedule(llama31, expected, kwargs):
    llm = LLM(llama31, device="cpu", dtype="float32", **kwargs)
    assert greedy(llm, prompts(), 16) == expected
    assert_no_leaked_blocks(llm)
    if "num_kvcache_blocks" in kwargs:
        assert llm.stats()["num_preemptions"] > 0


def test_llama_prefix_cached_second_pass_gives_the_same_tokens(llama31, expected):
    llm = LLM(llama31, device="cpu", dtype="float32", kvcache_block_size=16)
    assert greedy(llm, prompts(), 16) == expected
    assert greedy(llm, prompts(), 16) == expected
    assert llm.stats()["prefix_cache_hits"] > 0


def test_llama_tied_embeddings_and_sharded_checkpoint_load_and_match_hf(llama32_tied):
    llm = LLM(llama32_tied, device="cpu", dtype="float32", kvcache_block_size=16)
    assert llm.model_runner.model.lm_head.weight is llm.model_runner.model.model.embed_tokens.weight
    assert greedy(llm, prompts()[:3], 16) == hf_greedy(llama32_tied, prompts()[:3])


def test_llama_attention_and_mlp_biases_with_linear_rope_scaling_match_hf(llama_biased):
    config = ModelConfig.from_dir(llama_biased)
    assert (config.qkv_bias, config.o_proj_bias, config.mlp_bias) == (True, True, True)
    assert max_logit_error_vs_hf(llama_biased) < 1e-4


def test_config_json_of_transformers_4x_and_5x_parse_alike_and_give_hf_tokens(llama31, tmp_path):
    old = config_variant(llama31, str(tmp_path / "v4"), as_transformers_4x)
    assert dataclasses.replace(ModelConfig.from_dir(old), torch_dtype=None) == \
        dataclasses.replace(ModelConfig.from_dir(llama31), torch_dtype=None)
    assert ModelConfig.from_dir(old).rope_scaling["rope_type"] == "llama3"
    assert ModelConfig.from_dir(old).rope_theta == 500000.0
    batch = prompts()[:3]
    assert engine_greedy(old, batch, kvcache_block_size=16) == hf_greedy(old, batch)


@pytest.mark.slow
def test_llama_tp2_greedy_tokens_equal_one_rank(llama_biased):
    batch = prompts()
    want = engine_greedy(llama_biased, batch)
    with LLM(llama_biased, device="cpu", dtype="float32", tensor_parallel_size=2, kvcache_block_size=16,
             num_kvcache_blocks=8) as llm:
        assert greedy(llm, batch, 16) == want
        assert greedy(llm, batch[-2:], 16) == want[-2:]             # again: prefix-cache hits
        assert llm.stats()["num_preemptions"] > 0


@pytest.mark.parametrize("field, value, says", [
    ("hidden_act", "gelu", "hidden_act='gelu' is not supported for Llama"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
     "rope_scaling=.*rope_type 'yarn' is not supported"),
    ("rope_parameters", {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
     "rope_parameters=.*rope_type 'dynamic' is not supported"),
    ("rope_parameters", {**LLAMA3_ROPE, "low_freq_factor": None, "rope_theta": 10000.0},
     "rope_parameters=.*lacks 'low_freq_factor'"),
    ("partial_rotary_factor", 0.5, "partial_rotary_factor=0.5 is not supported"),
], ids=["hidden_act", "rope_scaling-yarn", "rope_parameters-dynamic", "llama3-missing-field", "partial_rotary"])
def test_a_llama_config_field_that_changes_the_math_and_is_not_implemented_is_an_error_naming_it(
        llama32_tied, tmp_path, field, value, says):
    d = config_variant(llama32_tied, str(tmp_path / "m"), lambda cfg: cfg.update({field: value}))
    with pytest.raises(ValueError, match=says):
        ModelConfig.from_dir(d)


@pytest.mark.gpu
@pytest.mark.parametrize("kwargs", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_llama_on_the_gpu_with_triton_kernels_and_cuda_graphs_equals_hf_in_fp32(llama31, expected, kwargs):
    llm = LLM(llama31, **{**GPU_KWARGS, **kwargs})
    assert llm.model_runner.cuda_graphs.graphs, "no CUDA graphs were captured"
    assert greedy(llm, prompts(), 16) == expected
    assert greedy(llm, prompts(), 16) == expected               # again: prefix-cache hits
    assert_no_leaked_blocks(llm)


@pytest.mark.gpu
def test_llama_batch_1_decode_on_the_gpu_equals_hf_in_fp32(llama31, expected):
    llm = LLM(llama31, **GPU_KWARGS)                           # one row: the gemv kernel, the batch-1 graph
    assert [greedy(llm, [p], 16)[0] for p in prompts()[:3]] == expected[:3]
