"""Every Triton kernel against its plain-torch reference, and the attention refs against dense SDPA.

On a machine without CUDA the Triton kernels run under Triton's CPU interpreter at tiny shapes;
tests marked `gpu` use real sizes and skip without CUDA.
"""

import os
from functools import partial

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import math  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from aios.kernels import (  # noqa: E402
    decode_attention,
    decode_attention_ref,
    fused_add_gemma_rms_norm,
    fused_add_gemma_rms_norm_ref,
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
    gelu_tanh_and_mul,
    gelu_tanh_and_mul_ref,
    gemma_rms_norm,
    gemma_rms_norm_ref,
    prefill_attention,
    prefill_attention_ref,
    qk_norm_rope,
    qk_norm_rope_ref,
    qk_norm_rope_store_kvcache,
    qk_norm_rope_store_kvcache_ref,
    rms_norm,
    rms_norm_ref,
    rope_store_kvcache,
    rope_store_kvcache_ref,
    silu_and_mul,
    silu_and_mul_ref,
    store_kvcache,
    store_kvcache_ref,
)
from aios.kernels.decode_attention import _decode_attention_launch, _decode_config  # noqa: E402
from aios.kernels.gemv import gemv, gemv_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
ATTN_TOL = {torch.float32: 2e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def make_paged_kv(seq_lens, block_size, num_kv_heads, head_dim, dtype, seed=0):
    """Random K/V per sequence, scattered into shuffled blocks of a NaN-poisoned paged cache.

    Returns (k_cache, v_cache, block_tables, ks, vs) where ks[s] `[seq_lens[s], kv_heads, hd]` is
    the contiguous truth. Every slot that holds no token (spare blocks, block tails) is NaN, so
    a kernel that reads one poisons its output.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [math.ceil(n / block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    block_tables = torch.full((len(seq_lens), max(blocks_per_seq, default=0) + 1), -1, dtype=torch.int32)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    ks, vs = [], []
    for s, n in enumerate(seq_lens):
        k = torch.randn(n, num_kv_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(n, num_kv_heads, head_dim, generator=gen).to(dtype)
        ids = [perm.pop() for _ in range(blocks_per_seq[s])]
        block_tables[s, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        for p in range(n):
            k_cache[ids[p // block_size], p % block_size] = k[p]
            v_cache[ids[p // block_size], p % block_size] = v[p]
        ks.append(k.to(DEVICE))
        vs.append(v.to(DEVICE))
    return k_cache.to(DEVICE), v_cache.to(DEVICE), block_tables.to(DEVICE), ks, vs


def make_prefill_batch(spans, block_size, num_heads, num_kv_heads, head_dim, dtype, seed=0):
    """spans: list of (seqlen_q, seqlen_k). Returns the prefill_attention arguments plus the truth."""
    k_cache, v_cache, block_tables, ks, vs = make_paged_kv(
        [sk for _, sk in spans], block_size, num_kv_heads, head_dim, dtype, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    total_q = sum(sq for sq, _ in spans)
    q = torch.randn(total_q, num_heads, head_dim, generator=gen).to(dtype).to(DEVICE)
    cu_q = torch.tensor([0] + [sum(sq for sq, _ in spans[: i + 1]) for i in range(len(spans))],
                        dtype=torch.int32, device=DEVICE)
    cu_k = torch.tensor([0] + [sum(sk for _, sk in spans[: i + 1]) for i in range(len(spans))],
                        dtype=torch.int32, device=DEVICE)
    args = (q, k_cache, v_cache, cu_q, cu_k, max(sq for sq, _ in spans), max(sk for _, sk in spans),
            block_tables, head_dim ** -0.5)
    return args, ks, vs


def dense_causal_attention(q, k, v, scale):
    """q `[sq, H, D]`, k/v `[sk, KVH, D]`: bottom-right-aligned causal SDPA on contiguous copies."""
    sq, num_heads, _ = q.shape
    sk, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    k = k.repeat_interleave(group, dim=1).transpose(0, 1).float()
    v = v.repeat_interleave(group, dim=1).transpose(0, 1).float()
    visible = torch.arange(sk, device=q.device)[None, :] <= torch.arange(sk - sq, sk, device=q.device)[:, None]
    out = F.scaled_dot_product_attention(q.transpose(0, 1).float(), k, v, attn_mask=visible, scale=scale)
    return out.transpose(0, 1)


def assert_attention_close(actual, expected, dtype):
    tol = ATTN_TOL[dtype]
    assert not actual.isnan().any(), "output has NaN: a kernel read a poisoned (unused) cache slot"
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol, rtol=tol)


# ---------------------------------------------------------------------------------------------
# store_kvcache


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [1, 16])
def test_store_kvcache_writes_only_mapped_slots_and_skips_minus_one(dtype, block_size):
    torch.manual_seed(0)
    num_tokens, num_heads, num_kv_heads, head_dim, num_blocks = 7, 4, 2, 64, 9
    qkv = torch.randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim).to(dtype).to(DEVICE)
    k = qkv[:, num_heads * head_dim:(num_heads + num_kv_heads) * head_dim].view(num_tokens, num_kv_heads, head_dim)
    v = qkv[:, (num_heads + num_kv_heads) * head_dim:].view(num_tokens, num_kv_heads, head_dim)
    slots = torch.randperm(num_blocks * block_size)[:num_tokens]
    slots[2] = slots[5] = -1  # padding rows of a CUDA-graph batch
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim).to(dtype).to(DEVICE)
    v_cache = torch.randn_like(k_cache)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    for slot_dtype in (torch.int32, torch.int64):
        slot_mapping = slots.to(slot_dtype).to(DEVICE)
        store_kvcache_ref(k, v, expected_k, expected_v, slot_mapping)
        store_kvcache(k, v, k_cache, v_cache, slot_mapping)
        assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
    flat = expected_k.view(-1, num_kv_heads, head_dim)
    assert torch.equal(flat[slots[0].item()], k[0])


# ---------------------------------------------------------------------------------------------
# prefill attention

PREFILL_SPANS = [(1, 1), (17, 17), (5, 40), (1, 33), (33, 70)]  # (seqlen_q, seqlen_k)


@pytest.mark.parametrize("block_size", [1, 16, 256])
def test_prefill_ref_matches_dense_sdpa(block_size):
    args, ks, vs = make_prefill_batch(PREFILL_SPANS, block_size, 4, 2, 32, torch.float32)
    q, cu_q, scale = args[0], args[3].tolist(), args[8]
    out = prefill_attention_ref(*args)
    for s, (k, v) in enumerate(zip(ks, vs)):
        expected = dense_causal_attention(q[cu_q[s]:cu_q[s + 1]], k, v, scale)
        torch.testing.assert_close(out[cu_q[s]:cu_q[s + 1]], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "spans, block_size, num_heads, num_kv_heads, head_dim, dtype",
    [
        (PREFILL_SPANS, 16, 4, 4, 64, torch.float32),   # GQA 1, block boundaries at 16/32/64
        (PREFILL_SPANS, 32, 4, 2, 64, torch.bfloat16),  # GQA 2
        ([(40, 40), (1, 64), (16, 65)], 64, 8, 2, 128, torch.float16),  # GQA 4, head_dim 128
        ([(1, 1)], 16, 2, 1, 64, torch.bfloat16),       # a single one-token sequence
    ],
)
def test_prefill_attention_matches_ref(spans, block_size, num_heads, num_kv_heads, head_dim, dtype):
    args, _, _ = make_prefill_batch(spans, block_size, num_heads, num_kv_heads, head_dim, dtype)
    assert_attention_close(prefill_attention(*args), prefill_attention_ref(*args), dtype)


@pytest.mark.parametrize("block_size", [1, 8, 48])
def test_prefill_attention_handles_blocks_smaller_than_a_tile_and_odd_sizes(block_size):
    args, _, _ = make_prefill_batch([(9, 30), (20, 20)], block_size, 4, 2, 32, torch.float32)
    assert_attention_close(prefill_attention(*args), prefill_attention_ref(*args), torch.float32)


# ---------------------------------------------------------------------------------------------
# decode attention

DECODE_CONTEXTS = [1, 15, 16, 17, 64, 100]


def make_decode_batch(context_lens, block_size, num_heads, num_kv_heads, head_dim, dtype, seed=0):
    k_cache, v_cache, block_tables, ks, vs = make_paged_kv(
        context_lens, block_size, num_kv_heads, head_dim, dtype, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    q = torch.randn(len(context_lens), num_heads, head_dim, generator=gen).to(dtype).to(DEVICE)
    lens = torch.tensor(context_lens, dtype=torch.int32, device=DEVICE)
    return (q, k_cache, v_cache, block_tables, lens, head_dim ** -0.5), ks, vs


def test_decode_ref_matches_dense_sdpa():
    args, ks, vs = make_decode_batch(DECODE_CONTEXTS, 16, 4, 2, 32, torch.float32)
    out = decode_attention_ref(*args)
    for s, (k, v) in enumerate(zip(ks, vs)):
        expected = dense_causal_attention(args[0][s:s + 1], k, v, args[5])
        torch.testing.assert_close(out[s:s + 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "block_size, num_heads, num_kv_heads, head_dim, dtype",
    [
        (16, 4, 4, 64, torch.float32),   # GQA 1
        (32, 4, 2, 64, torch.bfloat16),  # GQA 2
        (64, 8, 2, 128, torch.float16),  # GQA 4, head_dim 128
        (16, 32, 1, 32, torch.float32),  # group of 32 query heads on one kv head
        (8, 4, 2, 32, torch.float32),    # blocks smaller than a tile
    ],
)
def test_decode_attention_matches_ref(block_size, num_heads, num_kv_heads, head_dim, dtype):
    args, _, _ = make_decode_batch(DECODE_CONTEXTS, block_size, num_heads, num_kv_heads, head_dim, dtype)
    assert_attention_close(decode_attention(*args), decode_attention_ref(*args), dtype)


@pytest.mark.parametrize("num_splits", [1, 3, 8])
def test_decode_attention_is_the_same_for_any_number_of_splits(num_splits):
    args, _, _ = make_decode_batch(DECODE_CONTEXTS, 16, 4, 2, 32, torch.float32)
    cfg = _decode_config(32, torch.float32, args[0].device)
    out = _decode_attention_launch(*args, num_splits=num_splits, **cfg)
    assert_attention_close(out, decode_attention_ref(*args), torch.float32)


@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_attention_gives_zeros_for_empty_padding_rows(num_splits):
    args, _, _ = make_decode_batch([5, 20], 16, 4, 2, 32, torch.float32)
    q, k_cache, v_cache, block_tables, lens, scale = args
    q = torch.cat([q, torch.randn_like(q)])  # two CUDA-graph padding rows: no tokens, no blocks
    block_tables = torch.cat([block_tables, torch.full_like(block_tables, -1)])
    lens = torch.cat([lens, torch.zeros_like(lens)])
    args = (q, k_cache, v_cache, block_tables, lens, scale)
    cfg = _decode_config(32, torch.float32, q.device)
    out = _decode_attention_launch(*args, num_splits=num_splits, **cfg)
    expected = decode_attention_ref(*args)
    assert torch.equal(expected[2:], torch.zeros_like(expected[2:]))
    assert_attention_close(out, expected, torch.float32)


# ---------------------------------------------------------------------------------------------
# RMSNorm, qk-norm + RoPE, SiLU-and-mul

ELEMENTWISE_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def assert_close_ulps(actual, expected, ulps=1, scale=1.0):
    """Within `ulps` units in the last place of the dtype, relative or at magnitude `scale`."""
    eps = torch.finfo(expected.dtype).eps
    if INTERPRETED and expected.dtype == torch.bfloat16:
        ulps *= 4  # the interpreter rounds fp32 -> bf16 toward zero; GPUs round to nearest even
    torch.testing.assert_close(actual, expected, rtol=ulps * eps, atol=ulps * eps * scale)


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("num_rows, hidden", [(1, 64), (5, 1000)])
def test_rms_norm_matches_ref(dtype, num_rows, hidden):
    torch.manual_seed(0)
    x = (torch.randn(num_rows, 2 * hidden) * 3).to(dtype).to(DEVICE)[:, :hidden]  # strided rows
    weight = torch.randn(hidden).to(dtype).to(DEVICE)
    assert_close_ulps(rms_norm(x, weight, 1e-6), rms_norm_ref(x, weight, 1e-6), ulps=2)


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
def test_fused_add_rms_norm_matches_ref_and_rounds_the_residual_like_torch(dtype):
    torch.manual_seed(0)
    x = torch.randn(6, 320).to(dtype).to(DEVICE)
    residual = (torch.randn(6, 320) * 10).to(dtype).to(DEVICE)
    weight = torch.randn(320).to(dtype).to(DEVICE)
    x_before, residual_before = x.clone(), residual.clone()
    out, new_residual = fused_add_rms_norm(x, residual, weight, 1e-6)
    expected_out, expected_residual = fused_add_rms_norm_ref(x, residual, weight, 1e-6)
    if INTERPRETED and dtype == torch.bfloat16:
        assert_close_ulps(new_residual, expected_residual, ulps=1)
    else:
        assert torch.equal(new_residual, expected_residual)
    assert_close_ulps(out, expected_out, ulps=2)
    assert torch.equal(x, x_before) and torch.equal(residual, residual_before)


def test_gemma_rms_norm_ref_is_hf_gemma3_rmsnorm():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    torch.manual_seed(0)
    hf = Gemma3RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        hf.weight.uniform_(-0.5, 0.5)
    for dtype in ELEMENTWISE_DTYPES:
        x = (torch.randn(5, 64) * 3).to(dtype)
        assert torch.equal(gemma_rms_norm_ref(x, hf.weight.to(dtype), 1e-6), hf.to(dtype)(x))


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("num_rows, hidden", [(1, 64), (5, 1000)])
def test_gemma_rms_norm_and_its_fused_add_match_refs(dtype, num_rows, hidden):
    torch.manual_seed(0)
    x = (torch.randn(num_rows, 2 * hidden) * 3).to(dtype).to(DEVICE)[:, :hidden]  # strided rows
    residual = (torch.randn(num_rows, hidden) * 10).to(dtype).to(DEVICE)
    weight = (torch.rand(hidden) - 0.5).to(dtype).to(DEVICE)                     # zero-centred
    assert_close_ulps(gemma_rms_norm(x, weight, 1e-6), gemma_rms_norm_ref(x, weight, 1e-6), ulps=2)
    out, new_residual = fused_add_gemma_rms_norm(x, residual, weight, 1e-6)
    expected_out, expected_residual = fused_add_gemma_rms_norm_ref(x, residual, weight, 1e-6)
    assert out.dtype == dtype
    assert_close_ulps(new_residual, expected_residual, ulps=1)
    assert_close_ulps(out, expected_out, ulps=2)


def make_cos_sin_cache(max_position, head_dim, base=1_000_000.0):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)  # [max_position, head_dim]


def make_qk(num_tokens, num_heads, num_kv_heads, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim, generator=gen).to(dtype).to(DEVICE)
    q = qkv[:, : num_heads * head_dim].view(num_tokens, num_heads, head_dim)
    k = qkv[:, num_heads * head_dim:(num_heads + num_kv_heads) * head_dim].view(num_tokens, num_kv_heads, head_dim)
    q_weight = (1 + 0.1 * torch.randn(head_dim, generator=gen)).to(dtype).to(DEVICE)
    k_weight = (1 + 0.1 * torch.randn(head_dim, generator=gen)).to(dtype).to(DEVICE)
    positions = torch.randint(0, 4096, (num_tokens,), generator=gen).to(DEVICE)
    return q, k, q_weight, k_weight, positions, make_cos_sin_cache(4096, head_dim).to(DEVICE)


def test_qk_norm_rope_ref_matches_hf_qwen3_formulas():
    q, k, q_weight, k_weight, positions, cos_sin_cache = make_qk(5, 4, 2, 64, torch.bfloat16)
    # HF Qwen3RotaryEmbedding: emb = cat(freqs, freqs); cos/sin in fp32, then cast to x's dtype.
    inv_freq = 1.0 / 1_000_000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32, device=DEVICE) / 64)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(q.dtype)[:, None], emb.sin().to(q.dtype)[:, None]

    def hf_norm(x, w):
        h = x.float()
        return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)

    def rotate_half(x):
        return torch.cat((-x[..., 32:], x[..., :32]), dim=-1)

    qn, kn = hf_norm(q, q_weight), hf_norm(k, k_weight)
    q_out, k_out = qk_norm_rope_ref(q, k, q_weight, k_weight, positions, cos_sin_cache, 1e-6)
    # atol: cos/sin from the fp32 cache vs recomputed here can differ in the last fp32 bit.
    torch.testing.assert_close(q_out, qn * cos + rotate_half(qn) * sin, atol=2e-2, rtol=0)
    torch.testing.assert_close(k_out, kn * cos + rotate_half(kn) * sin, atol=2e-2, rtol=0)
    assert q_out.is_contiguous() and k_out.is_contiguous()


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("num_tokens, num_heads, num_kv_heads, head_dim", [(1, 4, 4, 64), (7, 6, 2, 128)])
def test_qk_norm_rope_matches_ref(dtype, num_tokens, num_heads, num_kv_heads, head_dim):
    args = make_qk(num_tokens, num_heads, num_kv_heads, head_dim, dtype)
    q_out, k_out = qk_norm_rope(*args, 1e-6)
    q_ref, k_ref = qk_norm_rope_ref(*args, 1e-6)
    # A 1-ulp difference of a normed value becomes an absolute error of ~1 ulp at the largest
    # magnitude in the rotation's sum, so measure ulps at the largest output magnitude.
    assert_close_ulps(q_out, q_ref, ulps=2, scale=q_ref.abs().max().item())
    assert_close_ulps(k_out, k_ref, ulps=2, scale=k_ref.abs().max().item())
    assert q_out.shape == (num_tokens, num_heads, head_dim) and q_out.is_contiguous()


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("num_tokens, num_heads, num_kv_heads, head_dim, block_size",
                         [(1, 4, 4, 64, 16), (7, 6, 2, 128, 4)])
@pytest.mark.parametrize("norm", [True, False], ids=["qk_norm", "no_norm"])
def test_rope_store_kvcache_writes_the_ref_k_and_v_into_mapped_slots_only(
        dtype, num_tokens, num_heads, num_kv_heads, head_dim, block_size, norm):
    """With a q/k norm (Qwen3: qk_norm_rope_store_kvcache) and without (Llama: rope_store_kvcache)."""
    q, k, q_weight, k_weight, positions, cos_sin = make_qk(num_tokens, num_heads, num_kv_heads, head_dim, dtype)
    if norm:
        impls = [("triton", qk_norm_rope_store_kvcache), ("ref", qk_norm_rope_store_kvcache_ref)]
        impls = [(n, partial(f, q_weight=q_weight, k_weight=k_weight, eps=1e-6)) for n, f in impls]
    else:
        impls = [("triton", rope_store_kvcache), ("ref", rope_store_kvcache_ref)]
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=torch.Generator().manual_seed(5)).to(dtype)
    v = v.to(DEVICE)
    shape = (5, block_size, num_kv_heads, head_dim)
    slots = torch.randperm(5 * block_size, generator=torch.Generator().manual_seed(6))[:num_tokens].to(DEVICE)
    if num_tokens > 1:
        slots[1] = -1  # a padding row: nothing written
    caches = {}
    for name, fn in impls:
        k_cache = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
        v_cache = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
        q_out = fn(q=q, k=k, v=v, positions=positions, cos_sin_cache=cos_sin, k_cache=k_cache, v_cache=v_cache,
                   slot_mapping=slots)
        caches[name] = (q_out, k_cache, v_cache)
    (q_out, k_cache, v_cache), (q_ref, k_ref_cache, v_ref_cache) = caches["triton"], caches["ref"]
    assert_close_ulps(q_out, q_ref, ulps=2, scale=q_ref.abs().max().item())
    written = torch.zeros(shape[:2], dtype=torch.bool, device=DEVICE).flatten()
    written[slots[slots >= 0]] = True
    written = written.view(shape[:2])
    assert k_cache[~written].isnan().all() and v_cache[~written].isnan().all()
    assert torch.equal(v_cache[written], v_ref_cache[written])
    k_ref = k_ref_cache[written]
    assert_close_ulps(k_cache[written], k_ref, ulps=2, scale=k_ref.abs().max().item())


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("num_rows, intermediate", [(1, 64), (3, 1500)])
def test_silu_and_mul_matches_ref(dtype, num_rows, intermediate):
    torch.manual_seed(0)
    x = (torch.randn(num_rows, 2 * intermediate) * 4).to(dtype).to(DEVICE)
    expected = silu_and_mul_ref(x)
    torch.testing.assert_close(expected, F.silu(x[:, :intermediate]) * x[:, intermediate:])
    assert_close_ulps(silu_and_mul(x), expected, ulps=2)


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("num_rows, intermediate", [(1, 64), (3, 1500)])
def test_gelu_tanh_and_mul_matches_ref_and_hf_gelu_pytorch_tanh(dtype, num_rows, intermediate):
    from transformers.activations import ACT2FN

    torch.manual_seed(0)
    x = (torch.randn(num_rows, 2 * intermediate) * 4).to(dtype).to(DEVICE)
    expected = gelu_tanh_and_mul_ref(x)
    torch.testing.assert_close(expected, ACT2FN["gelu_pytorch_tanh"](x[:, :intermediate]) * x[:, intermediate:])
    assert_close_ulps(gelu_tanh_and_mul(x), expected, ulps=2, scale=expected.abs().max().item())


@pytest.mark.parametrize("dtype", ELEMENTWISE_DTYPES)
@pytest.mark.parametrize("n, k, block_n, block_k", [(1, 16, None, None), (37, 100, None, None),
                                                    (64, 96, 8, 32), (130, 64, 16, 64)])
def test_gemv_matches_f_linear(dtype, n, k, block_n, block_k):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(1, k, generator=gen).to(dtype).to(DEVICE)
    w = torch.randn(n, k, generator=gen).to(dtype).to(DEVICE)
    got = gemv(x, w, block_n=block_n, block_k=block_k)
    expected = (x.double() @ w.double().T)
    assert got.shape == (1, n) and got.dtype == dtype
    # fp32 accumulation: only the final rounding to the dtype (and fp32 summation order) differ.
    tol = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(got.double(), expected, atol=tol * k ** 0.5, rtol=tol)
    torch.testing.assert_close(got.double(), gemv_ref(x, w).double(), atol=tol * k ** 0.5, rtol=2 * tol)


# ---------------------------------------------------------------------------------------------
# GPU: real sizes, CUDA-graph capture


@gpu
@needs_cuda
@pytest.mark.parametrize("block_size", [16, 64, 256])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_prefill_attention_matches_ref_at_real_sizes(block_size, head_dim):
    spans = [(1024, 1024), (300, 1500), (1, 700), (129, 129)]
    args, _, _ = make_prefill_batch(spans, block_size, 16, 8, head_dim, torch.bfloat16)
    assert_attention_close(prefill_attention(*args), prefill_attention_ref(*args), torch.bfloat16)


@gpu
@needs_cuda
@pytest.mark.parametrize("block_size", [16, 64, 256])
@pytest.mark.parametrize("batch", [1, 33])
def test_decode_attention_matches_ref_at_real_sizes(block_size, batch):
    lens = torch.randint(1, 3000, (batch,), generator=torch.Generator().manual_seed(batch)).tolist()
    args, _, _ = make_decode_batch(lens, block_size, 16, 8, 128, torch.bfloat16)
    assert_attention_close(decode_attention(*args), decode_attention_ref(*args), torch.bfloat16)


@gpu
@needs_cuda
@pytest.mark.parametrize("n, k", [(4096, 1024), (6144, 1024), (1024, 2048), (1024, 3072), (6144, 4096)])
def test_gemv_matches_f_linear_at_real_sizes(n, k):
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
    expected = (x.float() @ w.float().T)
    torch.testing.assert_close(gemv(x, w).float(), expected, atol=2e-2, rtol=2e-2)


@gpu
@needs_cuda
def test_decode_attention_replays_in_a_cuda_graph_with_new_context_lens():
    args, _, _ = make_decode_batch([700, 30, 1200, 5], 16, 16, 8, 128, torch.bfloat16)
    q, k_cache, v_cache, block_tables, lens, scale = args
    decode_attention(*args)  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention(q, k_cache, v_cache, block_tables, lens, scale)
        out2 = decode_attention(q, k_cache, v_cache, block_tables, lens, scale)
    for step in range(3):
        lens.copy_(torch.tensor([1 + step, 30, 1000 - step, 4], dtype=torch.int32))
        q.copy_(torch.randn_like(q))
        graph.replay()
        torch.cuda.synchronize()
        expected = decode_attention_ref(q, k_cache, v_cache, block_tables, lens, scale)
        assert_attention_close(out, expected, torch.bfloat16)
        assert torch.equal(out, out2)
