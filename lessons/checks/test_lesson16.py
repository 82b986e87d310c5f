"""Lesson 16: the router and the experts, against HuggingFace's Qwen3-MoE, then inside the engine."""

import pytest
import torch

LESSON = "16"


def hf_router(num_experts: int, top_k: int, norm: bool, hidden: int = 16):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    router = Qwen3MoeTopKRouter(Qwen3MoeConfig(hidden_size=hidden, num_experts=num_experts,
                                               num_experts_per_tok=top_k, norm_topk_prob=norm))
    torch.nn.init.normal_(router.weight, generator=torch.Generator().manual_seed(0))
    return router


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("norm", [False, True], ids=["plain", "norm_topk_prob"])
def test_select_experts_picks_and_weighs_what_hf_does(impl, norm):
    router = hf_router(8, 2, norm)
    x = torch.randn(12, 16, generator=torch.Generator().manual_seed(1))
    logits, hf_weights, hf_ids = router(x)
    weights, ids = impl.select_experts(logits, 2, norm)
    assert torch.equal(ids, hf_ids), "a token went to other experts than HF's router picks"
    assert torch.allclose(weights, hf_weights, atol=1e-6)


@pytest.mark.readme("Build it")
def test_select_experts_keeps_the_logits_dtype_and_renormalizes_to_one(impl):
    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    weights, ids = impl.select_experts(logits, 3, True)
    assert weights.dtype == torch.bfloat16 and ids.shape == (6, 3)
    assert torch.allclose(weights.float().sum(-1), torch.ones(6), atol=1e-2)


@pytest.mark.readme("Build it")
def test_moe_reference_equals_hf_experts(impl):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

    g = torch.Generator().manual_seed(3)
    experts = Qwen3MoeExperts(Qwen3MoeConfig(hidden_size=16, moe_intermediate_size=8, num_experts=4))
    with torch.no_grad():
        experts.gate_up_proj.normal_(generator=g)
        experts.down_proj.normal_(generator=g)
    x = torch.randn(10, 16, generator=g)
    weights, ids = hf_router(4, 2, True)(x)[1:]
    with torch.no_grad():
        want = experts(x, ids, weights)
        got = impl.moe_reference(x, experts.gate_up_proj, experts.down_proj, weights, ids)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@pytest.fixture(scope="session")
def tiny_moe(tmp_path_factory) -> str:
    from aios.utils.tiny_checkpoint_qwen3_moe import make_qwen3_moe_checkpoint
    return make_qwen3_moe_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3-moe")))


@pytest.mark.readme("Build it")
def test_the_engine_with_your_router_and_experts_gives_the_reference_tokens(impl, tiny_moe):
    from aios import LLM, SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=8)
    prompts = [[5, 17, 200, 33], list(range(40, 75))]
    with LLM(tiny_moe, device="cpu", dtype="float32", kvcache_block_size=16) as llm:
        want = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
        for layer in llm.model_runner.model.model.layers:              # your pieces, in every MoE layer
            layer.mlp.select_experts = impl.select_experts
            layer.mlp.experts.fused_moe = impl.moe_reference
        got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == want
