"""aios/bench/shapes.py: every benchmark shape is a config.json both engines build the right family from.

- Each shape's config.json parses through aios.config.ModelConfig and the registry picks the family
  its architectures name (Llama's llama3 RoPE scaling and Qwen3-MoE's experts come through).
- num_params / num_active_params match the published sizes, and at a reduced size equal the
  parameter count of HF's model built from the same config.json; num_params_read (what a decode
  step of a batch reads) grows from the active to all parameters of an MoE with its batch, and is
  every parameter of a dense model at any batch; the suite's time estimates follow it.
- Each shape, at a reduced size, builds in AIOS on the CPU with dummy weights (as many parameters as
  HF's model) and generates.
"""

import pytest

from aios import LLM, SamplingParams
from aios.bench.shapes import SHAPES, num_active_params, num_params, num_params_read, shape_config, write_shape
from aios.config import ModelConfig
from aios.models.registry import family_of

# Sizes published on the checkpoints' model cards (parameters, billions)
PUBLISHED = {"qwen3-0.6b": 0.6, "qwen3-8b": 8.2, "llama-3.1-8b": 8.03, "qwen3-30b-a3b": 30.5, "qwen2.5-7b": 7.61,
             "mistral-7b": 7.25}

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=256)
TINY_MOE = dict(TINY, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
FAMILY_SHAPES = ["qwen3-8b", "llama-3.1-8b", "qwen3-30b-a3b", "qwen2.5-7b", "mistral-7b"]


def tiny(shape: str) -> dict:
    return TINY_MOE if SHAPES[shape]["model_type"] == "qwen3_moe" else TINY


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shape_parses_into_the_family_its_architectures_name(shape, tmp_path):
    config = ModelConfig.from_dir(write_shape(shape, str(tmp_path)))
    assert family_of(SHAPES[shape]).model_type == SHAPES[shape]["model_type"] == config.model_type
    assert config.num_hidden_layers == SHAPES[shape]["num_hidden_layers"]
    assert config.vocab_size == SHAPES[shape]["vocab_size"]


def test_llama_3_1_8b_carries_its_llama3_rope_scaling_and_gqa(tmp_path):
    config = ModelConfig.from_dir(write_shape("llama-3.1-8b", str(tmp_path)))
    assert config.rope_scaling["rope_type"] == "llama3" and config.rope_scaling["factor"] == 8.0
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (32, 8, 128256)
    assert config.rope_theta == 500000.0 and not config.tie_word_embeddings


def test_qwen3_30b_a3b_has_128_experts_8_active_in_every_layer(tmp_path):
    config = ModelConfig.from_dir(write_shape("qwen3-30b-a3b", str(tmp_path)))
    moe = config.moe
    assert (moe.num_experts, moe.num_experts_per_tok, moe.moe_intermediate_size) == (128, 8, 768)
    assert moe.norm_topk_prob and len(moe.sparse_layers) == 48


@pytest.mark.parametrize("shape", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_size(shape):
    assert num_params(shape) / 1e9 == pytest.approx(PUBLISHED[shape], rel=0.03)


def test_qwen3_30b_a3b_reads_3_3b_parameters_a_token():
    assert num_active_params("qwen3-30b-a3b") / 1e9 == pytest.approx(3.3, rel=0.03)
    assert num_active_params("llama-3.1-8b") == num_params("llama-3.1-8b")


def test_an_moe_batch_reads_more_of_its_experts_as_it_grows():
    reads = [num_params_read("qwen3-30b-a3b", n) for n in (1, 2, 8, 64, 256, 1024)]
    assert reads[0] == num_active_params("qwen3-30b-a3b")
    assert reads == sorted(reads) and len(set(reads)) == len(reads)
    assert reads[-1] == pytest.approx(num_params("qwen3-30b-a3b"), rel=1e-3)
    assert all(num_params_read("qwen3-8b", n) == num_params("qwen3-8b") for n in (1, 32, 256))


def test_the_suite_estimates_an_moe_batch_by_the_experts_it_reads():
    """Batch 1 of the 30B-A3B shape reads 3.3B parameters (faster than the dense 8B shape); its
    256-sequence standard workload reads nearly all 30.5B (slower than the 8B), as measured on the
    H200 (26 s against an estimate of 13 s from the active parameters alone)."""
    from aios.bench import estimate, workloads
    moe, dense = shape_config("qwen3-30b-a3b"), shape_config("qwen3-8b")
    batch1, standard = workloads.by_name("batch1"), workloads.by_name("standard")
    assert estimate.workload_s(batch1, moe) < estimate.workload_s(batch1, dense)
    assert estimate.workload_s(standard, moe) > estimate.workload_s(standard, dense)


@pytest.mark.parametrize("shape", FAMILY_SHAPES)
def test_parameter_count_equals_hf_models_at_a_reduced_size(shape):
    from transformers import AutoConfig, AutoModelForCausalLM
    raw = shape_config(shape, **tiny(shape))
    config = AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})
    model = AutoModelForCausalLM.from_config(config)
    assert num_params(raw) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", FAMILY_SHAPES)
def test_shape_builds_in_aios_on_cpu_at_a_reduced_size(shape, tmp_path):
    path = write_shape(shape, str(tmp_path), **tiny(shape))
    with LLM(path, device="cpu", load_format="dummy", skip_tokenizer_init=True, max_model_len=64,
             kvcache_block_size=16) as llm:
        out = llm.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=3, ignore_eos=True), use_tqdm=False)
        assert len(out[0]["token_ids"]) == 3
        assert sum(p.numel() for p in llm.model_runner.model.parameters()) == num_params(shape_config(shape,
                                                                                                  **tiny(shape)))


def test_a_shape_directory_carries_the_bundled_tokenizer_only_when_asked(tmp_path):
    import os
    with_tok = write_shape("qwen3-0.6b", str(tmp_path), with_tokenizer=True)
    without = write_shape("qwen3-0.6b", str(tmp_path))
    assert os.path.exists(os.path.join(with_tok, "tokenizer.json"))
    assert not os.path.exists(os.path.join(without, "tokenizer.json")) and with_tok != without
