"""Lesson 05: a pre-allocated KV cache written by position, and RMSNorm fused with the residual add,
against plain torch (HF Qwen3RMSNorm's rounding) and HuggingFace's greedy tokens."""

import pytest
import torch

from lessons.common import load_module

LESSON = "05"
PROMPT_IDS = [5, 17, 42, 99, 7]


def add_rms_norm_oracle(x, residual, weight, eps):
    """HF: hidden = x + residual (x's dtype); Qwen3RMSNorm(hidden) rounds to x's dtype, then * weight."""
    s = x + residual
    h = s.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(s.dtype), s


def hf_greedy(model_dir: str, ids: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.readme("Build it: StaticKVCache")
def test_static_cache_is_allocated_once_with_its_full_shape(impl):
    cache = impl.StaticKVCache(3, 16, 2, 8, torch.float32, "cpu")
    assert cache.k.shape == cache.v.shape == (3, 16, 2, 8)
    ptr = cache.k.data_ptr()
    for pos in range(4):
        cache.update(1, torch.tensor([pos]), torch.randn(1, 2, 8), torch.randn(1, 2, 8))
    assert cache.k.data_ptr() == ptr, "update must write into the tensor allocated up front"


@pytest.mark.readme("Build it: StaticKVCache")
def test_static_cache_writes_at_positions_and_returns_views(impl):
    cache = impl.StaticKVCache(2, 16, 2, 8)
    k0, v0 = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    cache.update(0, torch.arange(5), k0, v0)
    k1, v1 = torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    k, v = cache.update(0, torch.tensor([5]), k1, v1)
    assert torch.equal(k, torch.cat([k0, k1])) and torch.equal(v, torch.cat([v0, v1]))
    assert k.data_ptr() == cache.k[0].data_ptr() and v.data_ptr() == cache.v[0].data_ptr(), "views, not copies"
    assert torch.equal(cache.k[0, 5], k1[0]) and not cache.k[1].any(), "layer 1 untouched"
    k, _ = cache.update(0, torch.tensor([2]), k1, v1)                 # rewrite a position: the view ends there
    assert k.shape[0] == 3 and torch.equal(cache.k[0, 2], k1[0]) and torch.equal(cache.k[0, 5], k1[0])


@pytest.mark.readme("Build it: StaticKVCache")
def test_static_cache_in_the_decode_loop_gives_hfs_tokens(impl, tiny_ckpt):
    loop03 = load_module("03_own_the_model/no_cache_loop.py")
    loop04 = load_module("04_kv_cache/kv_cache_loop.py")
    model = loop03.load_unfused(tiny_ckpt)
    attn = model.model.layers[0].self_attn
    cache = impl.StaticKVCache(len(model.model.layers), 32, attn.num_kv_heads, attn.head_dim)
    tokens = loop04.generate_with_cache(model, PROMPT_IDS, 12, cache)[0]
    assert tokens == hf_greedy(tiny_ckpt, PROMPT_IDS, 12)


@pytest.mark.readme("Build it: fused_add_rms_norm")
@pytest.mark.parametrize("dtype,weight_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                (torch.bfloat16, torch.float32)], ids=["fp32", "bf16", "bf16-fp32w"])
def test_fused_add_rms_norm_rounds_where_hf_rounds(impl, dtype, weight_dtype):
    torch.manual_seed(0)
    x, residual = (torch.randn(7, 96) * 3).to(dtype), torch.randn(7, 96).to(dtype)
    weight = (1 + torch.randn(96) / 4).to(weight_dtype)
    x0, r0 = x.clone(), residual.clone()
    out, new_residual = impl.fused_add_rms_norm(x, residual, weight, 1e-6)
    want_out, want_residual = add_rms_norm_oracle(x0, r0, weight, 1e-6)
    assert torch.equal(x, x0) and torch.equal(residual, r0), "the inputs must not be written"
    assert new_residual.dtype == dtype and out.dtype == torch.promote_types(weight_dtype, dtype)
    assert torch.equal(new_residual, want_residual)
    if dtype == torch.float32:
        torch.testing.assert_close(out, want_out, atol=1e-6, rtol=1e-6)
    else:                                          # bf16: rounded at the same points, so bit for bit
        assert torch.equal(out, want_out)


@pytest.mark.readme("Build it: fused_add_rms_norm")
def test_fused_add_rms_norm_in_every_layer_gives_hfs_tokens(impl, tiny_ckpt):
    from aios.layers.layernorm import RMSNorm
    loop03 = load_module("03_own_the_model/no_cache_loop.py")
    loop04 = load_module("04_kv_cache/kv_cache_loop.py")
    model = loop03.load_unfused(tiny_ckpt)
    for module in model.modules():
        if isinstance(module, RMSNorm):
            module.fused_add_rms_norm = impl.fused_add_rms_norm         # the norm's kernel, chosen per module
    tokens = loop04.generate_with_cache(model, PROMPT_IDS, 12, fused_norm=True)[0]
    assert tokens == hf_greedy(tiny_ckpt, PROMPT_IDS, 12)
