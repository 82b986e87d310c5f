"""Qwen2 / Qwen2.5 (aios/models/qwen2.py) computes what HF's Qwen2ForCausalLM computes: fp32 logits
and greedy tokens under every schedule, with q/k/v biases (split across TP ranks, on the one-row
gemv path too), `use_sliding_window: false` honoured, tied and sharded checkpoints, config.json as
transformers 4.5x and 5.x write it, and TP; refused fields are errors naming them."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from family_oracle import (
    GPU_KWARGS,
    SCHEDULES,
    as_transformers_4x,
    config_variant,
    engine_greedy,
    hf_greedy,
    hf_model,
    max_logit_error_vs_hf,
    prompts,
)

from aios import LLM
from aios.config import ModelConfig
from aios.distributed.tp_group import TPGroup
from aios.layers.backend import TORCH, TRITON
from aios.layers.linear import QKVParallelLinear
from aios.utils.tiny_checkpoint import make_checkpoint
from helpers import assert_no_leaked_blocks, greedy


def as_published_qwen25(cfg: dict) -> None:
    """As Qwen2.5's config.json: a window and max_window_layers, switched off by use_sliding_window.
    The window (8) is shorter than the prompts, so attending within it would change the tokens."""
    cfg.update(use_sliding_window=False, sliding_window=8, max_window_layers=1)


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory) -> str:
    """Qwen2.5 style: q/k/v biases, rope_theta 1e6, untied, GQA 4 / 2 heads, an unused window."""
    base = make_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen2-base")), family="qwen2", rope_theta=1e6)
    return config_variant(base, str(tmp_path_factory.mktemp("q") / "tiny-qwen25"), as_published_qwen25)


@pytest.fixture(scope="module")
def qwen25_tied(tmp_path_factory) -> str:
    """Qwen2.5 0.5B-3B style: tied embeddings, in 2 safetensors shards."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen25-tied")), family="qwen2", rope_theta=1e6,
                           tie_word_embeddings=True, num_kv_heads=1, seed=1, num_shards=2)


@pytest.fixture(scope="module")
def expected(qwen25):
    return hf_greedy(qwen25, prompts())


def test_the_oracle_ignores_the_window_that_use_sliding_window_switches_off(qwen25):
    hf = hf_model(qwen25)
    assert hf.config.sliding_window is None and set(hf.config.layer_types) == {"full_attention"}
    assert hf.model.layers[0].self_attn.q_proj.bias is not None and hf.model.layers[0].self_attn.o_proj.bias is None


def test_qwen2_logits_match_hf_in_fp32(qwen25):
    assert max_logit_error_vs_hf(qwen25) < 1e-4


@pytest.mark.parametrize("kwargs", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_qwen2_greedy_tokens_equal_hf_under_every_schedule(qwen25, expected, kwargs):
    llm = LLM(qwen25, device="cpu", dtype="float32", **kwargs)
    assert greedy(llm, prompts(), 16) == expected
    assert_no_leaked_blocks(llm)
    if "num_kvcache_blocks" in kwargs:
        assert llm.stats()["num_preemptions"] > 0


def test_qwen2_prefix_cached_second_pass_gives_the_same_tokens(qwen25, expected):
    llm = LLM(qwen25, device="cpu", dtype="float32", kvcache_block_size=16)
    assert greedy(llm, prompts(), 16) == expected
    assert greedy(llm, prompts(), 16) == expected
    assert llm.stats()["prefix_cache_hits"] > 0


def test_qwen2_tied_embeddings_and_sharded_checkpoint_load_and_match_hf(qwen25_tied):
    llm = LLM(qwen25_tied, device="cpu", dtype="float32", kvcache_block_size=16)
    assert llm.model_runner.model.lm_head.weight is llm.model_runner.model.model.embed_tokens.weight
    assert greedy(llm, prompts()[:3], 16) == hf_greedy(qwen25_tied, prompts()[:3])


def test_config_json_of_transformers_4x_and_5x_parse_alike_and_give_hf_tokens(qwen25, tmp_path):
    old = config_variant(qwen25, str(tmp_path / "v4"), as_transformers_4x)
    assert dataclasses.replace(ModelConfig.from_dir(old), torch_dtype=None) == \
        dataclasses.replace(ModelConfig.from_dir(qwen25), torch_dtype=None)
    assert ModelConfig.from_dir(old).rope_theta == 1e6 and ModelConfig.from_dir(old).qkv_bias
    batch = prompts()[:3]
    assert engine_greedy(old, batch, kvcache_block_size=16) == hf_greedy(old, batch)


@pytest.mark.parametrize("tp_size, num_kv_heads", [(2, 2), (4, 2)], ids=["kv-heads-split", "kv-heads-replicated"])
def test_qkv_bias_is_split_across_ranks_as_its_heads_are(tp_size, num_kv_heads):
    hidden, head_dim, num_heads = 16, 4, 4
    g = torch.Generator().manual_seed(0)
    w = {s: torch.randn(n * head_dim, hidden, generator=g) for s, n in (("q", num_heads), ("k", num_kv_heads),
                                                                       ("v", num_kv_heads))}
    b = {s: torch.randn(t.shape[0], generator=g) for s, t in w.items()}
    x = torch.randn(3, hidden, generator=g)
    full = {s: F.linear(x, w[s], b[s]) for s in w}               # [3, heads * head_dim] of each of q, k, v
    for rank in range(tp_size):
        layer = QKVParallelLinear(hidden, head_dim, num_heads, num_kv_heads, bias=True,
                                  tp=TPGroup(rank, tp_size), backend=TORCH)
        for s in w:
            layer.weight.weight_loader(layer.weight, w[s], s)
            layer.bias.weight_loader(layer.bias, b[s], s)
        q, k, v = layer(x).split([layer.num_heads * head_dim] + [layer.num_kv_heads * head_dim] * 2, dim=-1)
        q_rows, kv_rows = layer.num_heads * head_dim, layer.num_kv_heads * head_dim
        assert torch.allclose(q, full["q"][:, rank * q_rows:(rank + 1) * q_rows], atol=1e-6)
        assert torch.allclose(k, full["k"][:, layer.kv_rank * kv_rows:(layer.kv_rank + 1) * kv_rows], atol=1e-6)
        assert torch.allclose(v, full["v"][:, layer.kv_rank * kv_rows:(layer.kv_rank + 1) * kv_rows], atol=1e-6)


def test_one_row_input_adds_the_bias_on_the_gemv_path():
    layer = QKVParallelLinear(32, 8, 4, 2, bias=True, backend=TRITON)         # Triton gemv (interpreted on CPU)
    assert layer.gemv_one_row
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(1, 32)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-4)


@pytest.mark.slow
def test_qwen2_tp2_greedy_tokens_equal_one_rank(qwen25):
    batch = prompts()
    want = engine_greedy(qwen25, batch)
    with LLM(qwen25, device="cpu", dtype="float32", tensor_parallel_size=2, kvcache_block_size=16,
             num_kvcache_blocks=8) as llm:
        assert greedy(llm, batch, 16) == want
        assert greedy(llm, batch[-2:], 16) == want[-2:]             # again: prefix-cache hits
        assert llm.stats()["num_preemptions"] > 0


@pytest.mark.parametrize("field, value, says", [
    ("use_sliding_window", True, "use_sliding_window=True is not supported for Qwen2"),
    ("layer_types", ["full_attention", "sliding_attention"], "layer_types=.* is not supported for Qwen2"),
    ("dual_chunk_attention_config", {"chunk_size": 262144, "local_size": 8192},
     "dual_chunk_attention_config=.* is not supported for Qwen2"),
    ("rope_scaling", {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
     "rope_scaling=.*rope_type 'yarn' is not supported"),
    ("hidden_act", "gelu", "hidden_act='gelu' is not supported for Qwen2"),
], ids=["use_sliding_window", "layer_types", "dual_chunk_attention", "rope_scaling-yarn", "hidden_act"])
def test_a_qwen2_config_field_that_changes_the_math_and_is_not_implemented_is_an_error_naming_it(
        qwen25_tied, tmp_path, field, value, says):
    d = config_variant(qwen25_tied, str(tmp_path / "m"), lambda cfg: cfg.update({field: value}))
    with pytest.raises(ValueError, match=says):
        ModelConfig.from_dir(d)


@pytest.mark.gpu
@pytest.mark.parametrize("kwargs", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_qwen2_on_the_gpu_with_triton_kernels_and_cuda_graphs_equals_hf_in_fp32(qwen25, expected, kwargs):
    llm = LLM(qwen25, **{**GPU_KWARGS, **kwargs})
    assert llm.model_runner.cuda_graphs.graphs, "no CUDA graphs were captured"
    assert greedy(llm, prompts(), 16) == expected
    assert greedy(llm, prompts(), 16) == expected               # again: prefix-cache hits
    assert_no_leaked_blocks(llm)


@pytest.mark.gpu
def test_qwen2_batch_1_decode_on_the_gpu_equals_hf_in_fp32(qwen25, expected):
    llm = LLM(qwen25, **GPU_KWARGS)                           # one row: the gemv kernel, the batch-1 graph
    assert [greedy(llm, [p], 16)[0] for p in prompts()[:3]] == expected[:3]
