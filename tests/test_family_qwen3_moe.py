"""Qwen3-MoE (aios/models/qwen3_moe.py) computes what HuggingFace's Qwen3MoeForCausalLM computes:
fp32 logits and greedy tokens, under small blocks, chunked prefill, preemption, a prefix-cached
second pass, sync and async scheduling, the fused kernel, and TP=2; config fields it does not
implement are refused by name, and a checkpoint missing one expert's tensor is an error naming it."""

import json
import os
import shutil

import pytest
import torch
from test_model_vs_hf import all_token_logits

from aios import LLM
from aios.config import ModelConfig
from aios.utils.tiny_checkpoint_qwen3_moe import make_qwen3_moe_checkpoint
from helpers import assert_no_leaked_blocks, greedy, hf_greedy, random_prompts


@pytest.fixture(scope="module", params=[True, False], ids=["norm_topk_prob", "no-norm_topk_prob"])
def moe_ckpt(request, tmp_path_factory) -> str:
    """8 experts, top-2, both layers sparse; norm_topk_prob on and off."""
    return make_qwen3_moe_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3-moe")), norm_topk_prob=request.param)


@pytest.fixture(scope="module")
def mixed_ckpt(tmp_path_factory) -> str:
    """4 layers: 0 and 1 dense (mlp_only_layers), experts every 2nd layer (decoder_sparse_step=2): only
    layer 3 has experts; 4 experts, top-3, tied embeddings, sharded safetensors."""
    return make_qwen3_moe_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3-moe-mixed")), num_layers=4,
                                     num_experts=4, num_experts_per_tok=3, decoder_sparse_step=2,
                                     mlp_only_layers=[0, 1], tie_word_embeddings=True, seed=2, num_shards=3)


def hf_model(model_dir: str):
    from transformers import Qwen3MoeForCausalLM
    return Qwen3MoeForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()




def assert_logits_match_hf(llm: LLM, model_dir: str, lengths: list[int]) -> None:
    prompts = random_prompts(512, lengths)
    ours = all_token_logits(llm, prompts)
    hf = hf_model(model_dir)
    with torch.no_grad():
        for p, mine in zip(prompts, ours):
            assert (mine - hf(torch.tensor([p])).logits[0]).abs().max().item() < 1e-4


def test_logits_match_hf_in_fp32_for_a_batch_of_different_lengths(moe_ckpt):
    llm = LLM(moe_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    assert_logits_match_hf(llm, moe_ckpt, [1, 5, 16, 17, 40])


def test_dense_layers_sparse_step_tied_and_sharded_checkpoint_follow_the_config_and_match_hf(mixed_ckpt):
    from aios.layers.fused_moe import FusedMoE

    assert len([f for f in os.listdir(mixed_ckpt) if f.endswith(".safetensors")]) >= 3

    llm = LLM(mixed_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    layers = llm.model_runner.model.model.layers
    sparse = [isinstance(getattr(layer.mlp, "experts", None), FusedMoE) for layer in layers]
    assert sparse == [False, False, False, True]
    assert_logits_match_hf(llm, mixed_ckpt, [3, 33])


PROMPTS = random_prompts(512, [3, 9, 30, 50, 70], seed=4)     # spanning several 16-token blocks


@pytest.fixture(scope="module")
def hf_tokens(moe_ckpt):
    return hf_greedy(moe_ckpt, PROMPTS, 16)


@pytest.mark.parametrize("engine", [
    dict(),
    dict(async_scheduling=False),
    dict(max_num_batched_tokens=32, max_num_seqs=4),        # chunked prefill: the 70-token prompt in 3 steps
    dict(num_kvcache_blocks=8),                             # 128 tokens of KV for 5 sequences: preemption
], ids=["async", "sync", "chunked-prefill", "preemption"])
def test_greedy_tokens_equal_hf_generate(moe_ckpt, hf_tokens, engine):
    with LLM(moe_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, **engine) as llm:
        assert greedy(llm, PROMPTS, 16) == hf_tokens
        if "num_kvcache_blocks" in engine:
            assert llm.stats()["num_preemptions"] > 0
        assert_no_leaked_blocks(llm)


def test_prefix_cached_second_pass_gives_the_same_tokens(moe_ckpt):
    prefix = random_prompts(512, [40], seed=7)[0]
    prompts = [prefix + tail for tail in random_prompts(512, [3, 8], seed=8)]
    want = hf_greedy(moe_ckpt, prompts, 12)
    with LLM(moe_ckpt, device="cpu", dtype="float32", kvcache_block_size=16) as llm:
        assert greedy(llm, prompts, 12) == want
        assert greedy(llm, prompts, 12) == want
        assert llm.stats()["prefix_cache_hits"] > 0


def test_the_triton_kernels_in_the_model_give_hf_logits(moe_ckpt):
    """The engine's router and experts run by the GPU path's Triton kernels (aios/kernels/topk_softmax.py,
    fused_moe.py; interpreted on a CPU) instead of the references."""
    from aios.kernels.fused_moe import fused_moe
    from aios.kernels.topk_softmax import topk_softmax

    llm = LLM(moe_ckpt, device="cpu", dtype="float32", kvcache_block_size=16)
    for layer in llm.model_runner.model.model.layers:
        layer.mlp.select_experts = topk_softmax
        layer.mlp.experts.fused_moe = fused_moe
    assert_logits_match_hf(llm, moe_ckpt, [2, 19])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_and_mostly_agrees_with_fp32(moe_ckpt, dtype):
    prompts = random_prompts(512, [12, 33], seed=5)
    ref = all_token_logits(LLM(moe_ckpt, device="cpu", dtype="float32"), prompts)
    half = all_token_logits(LLM(moe_ckpt, device="cpu", dtype=dtype), prompts)
    for a, b in zip(ref, half):
        assert b.dtype == getattr(torch, dtype)
        assert (a.argmax(-1) == b.float().argmax(-1)).float().mean().item() > 0.8


@pytest.mark.slow
def test_tp2_greedy_tokens_equal_one_rank(moe_ckpt, hf_tokens):
    with LLM(moe_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, tensor_parallel_size=2,
             num_kvcache_blocks=12) as llm:
        assert llm.model_runner.model.model.layers[0].mlp.experts.down_proj.shape == (8, 64, 16)
        assert greedy(llm, PROMPTS, 16) == hf_tokens
        assert_no_leaked_blocks(llm)


def test_a_checkpoint_missing_one_experts_tensor_names_it(moe_ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    d = str(tmp_path / "m")
    shutil.copytree(moe_ckpt, d)
    path = os.path.join(d, "model.safetensors")
    tensors = load_file(path)
    del tensors["model.layers.1.mlp.experts.5.up_proj.weight"]
    save_file(tensors, path)
    with pytest.raises(ValueError, match=r"lacks tensors for: model\.layers\.1\.mlp\.experts\.5\.up_proj\.weight"):
        LLM(d, device="cpu")


def edited_config(src: str, dst, **changes) -> str:
    d = str(dst)
    shutil.copytree(src, d)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def test_a_transformers_4_config_naming_num_experts_parses_the_same(moe_ckpt, tmp_path):
    d = edited_config(moe_ckpt, tmp_path / "m", num_local_experts=None, num_experts=8, rope_parameters=None,
                      rope_theta=10000.0, rope_scaling=None)
    assert ModelConfig.from_dir(d) == ModelConfig.from_dir(moe_ckpt)


@pytest.mark.parametrize("field, value", [
    ("shared_expert_intermediate_size", 256),
    ("use_sliding_window", True),
    ("attention_bias", True),
    ("hidden_act", "gelu"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
])
def test_a_config_field_that_changes_the_math_and_is_not_implemented_is_an_error_naming_it(
        moe_ckpt, tmp_path, field, value):
    d = edited_config(moe_ckpt, tmp_path / "m", **{field: value})
    with pytest.raises(ValueError, match=f"{field}=.* is not supported for Qwen3-MoE"):
        ModelConfig.from_dir(d)


@pytest.mark.parametrize("changes, match", [
    (dict(num_experts_per_tok=9), "num_experts_per_tok must be in"),
    (dict(mlp_only_layers=[5]), "mlp_only_layers must be layer indices"),
    (dict(decoder_sparse_step=0), "decoder_sparse_step must be"),
    (dict(moe_intermediate_size=None), "lacks the field 'moe_intermediate_size'"),
])
def test_a_malformed_moe_field_is_an_error_naming_it(moe_ckpt, tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dir(edited_config(moe_ckpt, tmp_path / "m", **changes))


def test_the_router_aux_loss_fields_are_training_only_and_change_nothing(moe_ckpt, tmp_path):
    d = edited_config(moe_ckpt, tmp_path / "m", router_aux_loss_coef=0.5, output_router_logits=True)
    assert ModelConfig.from_dir(d) == ModelConfig.from_dir(moe_ckpt)


@pytest.mark.gpu
@pytest.mark.parametrize("fused, moe_gemm", [(True, "triton"), (False, "triton"), (True, "tma")],
                         ids=["fused-kernel", "reference", "tma-kernel"])
def test_greedy_tokens_equal_hf_on_the_gpu_with_cuda_graphs(moe_ckpt, hf_tokens, fused, moe_gemm):
    """fused_kernels=False runs fused_moe_ref on the GPU, inside the same CUDA graphs (no host sync);
    moe_gemm="tma" the opt-in TMA grouped GEMMs (aios/kernels/fused_moe_tma.py)."""
    from aios.kernels.fused_moe import fused_moe, fused_moe_ref
    from aios.kernels.fused_moe_tma import fused_moe_tma
    from aios.kernels.topk_softmax import topk_softmax
    from aios.layers.fused_moe import select_experts

    with LLM(moe_ckpt, device="cuda", dtype="float32", kvcache_block_size=16, gpu_memory_utilization=0.3,
             max_num_seqs=8, fused_kernels=fused, moe_gemm=moe_gemm) as llm:
        assert llm.model_runner.cuda_graphs.graphs
        experts = llm.model_runner.model.model.layers[0].mlp.experts.fused_moe   # fused: bound to the layer's tiles
        want = fused_moe_ref if not fused else fused_moe_tma if moe_gemm == "tma" else fused_moe
        assert getattr(experts, "func", experts) is want
        assert llm.model_runner.model.model.layers[0].mlp.select_experts is (topk_softmax if fused else select_experts)
        assert greedy(llm, PROMPTS, 16) == hf_tokens
