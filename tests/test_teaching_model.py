"""Lessons 03-05's teaching model (lessons/03_own_the_model/unfused_model.py, run by no_cache_loop.py's
`forward`) computes what HF's model of each dense family computes: a Llama 3.1 with llama3 RoPE
scaling past its original context, a Qwen2 with q/k/v biases and tied embeddings, a Mistral whose
sliding window is shorter than the prompt. Greedy tokens agree with HF's with no cache (lesson 03),
a growing cache (04) and a pre-allocated one (05); aios's fused modules run the same loop (`load`);
Gemma 3 is refused by name. (tests/test_lessons.py runs the lessons' scripts on a Llama.)"""

import pytest
import torch

from aios.utils.tiny_checkpoint import make_checkpoint
from aios.utils.tiny_sliding_checkpoints import make_gemma3_checkpoint, make_mistral_checkpoint
from helpers import hf_greedy, hf_model, random_prompts
from lessons.common import load_module

no_cache = load_module("03_own_the_model/no_cache_loop.py")
kv_cache = load_module("04_kv_cache/kv_cache_loop.py")
static_cache = load_module("05_preallocated_kv_cache/static_cache_loop.py")
PROMPT = random_prompts(512, [40], seed=3)[0]         # past Llama's 32-token original context, Mistral's window
MAX_TOKENS = 8
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    def tmp(name: str) -> str:
        return str(tmp_path_factory.mktemp(name))

    return {
        "llama3.1": make_checkpoint(tmp("tiny-llama31"), family="llama", rope_theta=500000.0, rope_scaling=LLAMA3_ROPE),
        "qwen2": make_checkpoint(tmp("tiny-qwen2"), family="qwen2", tie_word_embeddings=True, seed=1),
        "mistral-window": make_mistral_checkpoint(tmp("tiny-mistral"), sliding_window=12, seed=2),
    }


FAMILIES = ["llama3.1", "qwen2", "mistral-window"]


@pytest.mark.parametrize("family", FAMILIES)
def test_teaching_model_gives_hfs_fp32_logits(checkpoints, family):
    model_dir = checkpoints[family]
    model = no_cache.load_unfused(model_dir)
    with torch.no_grad():
        expected = hf_model(model_dir)(torch.tensor([PROMPT])).logits[0, -1]
    got = no_cache.forward(model, torch.tensor(PROMPT), torch.arange(len(PROMPT)))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_teaching_loops_give_hfs_greedy_tokens_with_no_cache_a_growing_cache_and_a_static_one(checkpoints, family):
    model_dir = checkpoints[family]
    expected = hf_greedy(model_dir, [PROMPT], MAX_TOKENS)[0]
    model = no_cache.load_unfused(model_dir)
    assert no_cache.generate_no_cache(model, PROMPT, MAX_TOKENS)[0] == expected
    assert kv_cache.generate_with_cache(model, PROMPT, MAX_TOKENS)[0] == expected
    cache = static_cache.for_model(model, len(PROMPT) + MAX_TOKENS)
    assert kv_cache.generate_with_cache(model, PROMPT, MAX_TOKENS, cache, fused_norm=True)[0] == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loop_over_aios_fused_modules_gives_the_teaching_models_tokens(checkpoints, family):
    model_dir = checkpoints[family]
    ours = kv_cache.generate_with_cache(no_cache.load_unfused(model_dir), PROMPT, MAX_TOKENS)[0]
    assert kv_cache.generate_with_cache(no_cache.load(model_dir), PROMPT, MAX_TOKENS)[0] == ours


def test_teaching_model_has_a_bias_only_where_the_checkpoint_has_one(checkpoints):
    attn = no_cache.load_unfused(checkpoints["qwen2"]).model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.o_proj.bias is None and attn.q_norm is None


def test_teaching_model_refuses_gemma3_naming_the_families_it_serves(tmp_path):
    model_dir = make_gemma3_checkpoint(str(tmp_path / "tiny-gemma3"))
    for load in (no_cache.load_unfused, no_cache.load):
        with pytest.raises(ValueError, match=r"'gemma3_text' is not one of .*qwen3, llama, qwen2, mistral"):
            load(model_dir)
