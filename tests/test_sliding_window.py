"""Sliding-window attention: HF's mask, the refs against dense attention under it, the Triton
kernels against the refs at window and block edges, and the engine's cache paths under a window.

HF's rule (transformers.masking_utils.sliding_window_overlay, used by Mistral and Gemma 3): the
query at position p sees keys j with p - W < j <= p, its last W tokens itself included.
"""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_backend import one_prefill_and_one_decode, triton_launches  # noqa: E402, F401 (a fixture)
from test_kernels import assert_attention_close, make_decode_batch, make_prefill_batch  # noqa: E402

from aios.kernels import decode_attention, decode_attention_ref, prefill_attention, prefill_attention_ref  # noqa: E402
from aios.kernels.decode_attention import _decode_attention_launch, _decode_config  # noqa: E402
from aios.kernels.prefill_attention import _prefill_attention_launch  # noqa: E402
from aios.layers.backend import TORCH, TRITON  # noqa: E402

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def hf_sliding_mask(seqlen_q: int, seqlen_k: int, window: int) -> torch.Tensor:
    """[seqlen_q, seqlen_k] bool: HF's causal AND sliding-window mask functions, evaluated per pair."""
    from transformers.masking_utils import and_masks, causal_mask_function, sliding_window_overlay

    mask_fn = and_masks(causal_mask_function, sliding_window_overlay(window))
    q_pos = torch.arange(seqlen_k - seqlen_q, seqlen_k)[:, None]
    return mask_fn(0, 0, q_pos, torch.arange(seqlen_k)[None, :]).expand(seqlen_q, seqlen_k)


def dense_attention(q, k, v, scale, visible):
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).transpose(0, 1).float()
    v = v.repeat_interleave(group, dim=1).transpose(0, 1).float()
    out = F.scaled_dot_product_attention(q.transpose(0, 1).float(), k, v, attn_mask=visible.to(q.device),
                                         scale=scale)
    return out.transpose(0, 1)


def test_hf_window_includes_the_query_and_its_last_window_minus_one_tokens():
    mask = hf_sliding_mask(seqlen_q=10, seqlen_k=10, window=4)
    assert mask[9].nonzero().flatten().tolist() == [6, 7, 8, 9]     # p - W < j <= p
    assert mask[2].nonzero().flatten().tolist() == [0, 1, 2]


@pytest.mark.parametrize("window", [1, 3, 16, 17, 100])
def test_prefill_ref_with_window_matches_dense_attention_under_hf_mask(window):
    spans = [(1, 1), (17, 17), (5, 40), (1, 33), (33, 70)]
    args, ks, vs = make_prefill_batch(spans, 16, 4, 2, 32, torch.float32)
    q, cu_q, scale = args[0], args[3].tolist(), args[8]
    out = prefill_attention_ref(*args, sliding_window=window)
    for s, ((sq, sk), k, v) in enumerate(zip(spans, ks, vs)):
        expected = dense_attention(q[cu_q[s]:cu_q[s + 1]], k, v, scale, hf_sliding_mask(sq, sk, window))
        torch.testing.assert_close(out[cu_q[s]:cu_q[s + 1]], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [1, 5, 16, 33, 100])
def test_decode_ref_with_window_matches_dense_attention_under_hf_mask(window):
    contexts = [1, 15, 16, 17, 64, 100]
    args, ks, vs = make_decode_batch(contexts, 16, 4, 2, 32, torch.float32)
    out = decode_attention_ref(*args, sliding_window=window)
    for s, (n, k, v) in enumerate(zip(contexts, ks, vs)):
        expected = dense_attention(args[0][s:s + 1], k, v, args[5], hf_sliding_mask(1, n, window))
        torch.testing.assert_close(out[s:s + 1], expected, atol=1e-5, rtol=1e-5)


def test_window_as_long_as_the_sequence_is_full_causal_attention():
    args, _, _ = make_prefill_batch([(33, 70)], 16, 4, 2, 32, torch.float32)
    torch.testing.assert_close(prefill_attention_ref(*args, sliding_window=70), prefill_attention_ref(*args))


# window edges: 1, below / at / above a tile (16 under the interpreter) and a block; spans whose
# cached prefix ends inside, at, and past the window (chunked prefill straddling the window)
PREFILL_WINDOW_SPANS = [(1, 1), (17, 17), (5, 40), (1, 33), (33, 70), (16, 48), (20, 21)]


@pytest.mark.parametrize("window, block_size", [(1, 16), (7, 8), (15, 16), (16, 16), (17, 8), (32, 16), (40, 8),
                                                (200, 16)])
def test_prefill_attention_with_window_matches_ref(window, block_size):
    args, _, _ = make_prefill_batch(PREFILL_WINDOW_SPANS, block_size, 4, 2, 32, torch.float32)
    assert_attention_close(prefill_attention(*args, sliding_window=window),
                           prefill_attention_ref(*args, sliding_window=window), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("block_m, block_n", [(16, 16), (32, 16), (16, 32)])
def test_prefill_attention_with_window_matches_ref_for_any_tile_shape(block_m, block_n):
    args, _, _ = make_prefill_batch(PREFILL_WINDOW_SPANS, 16, 4, 1, 32, torch.bfloat16)
    q, k_cache, v_cache, cu_q, cu_k, max_q, _, block_tables, scale = args
    for window in (9, 31, 48):
        out = _prefill_attention_launch(q, k_cache, v_cache, cu_q, cu_k, max_q, block_tables, scale,
                                        block_m=block_m, block_n=block_n, num_warps=4, num_stages=1,
                                        sliding_window=window)
        assert_attention_close(out, prefill_attention_ref(*args, sliding_window=window), torch.bfloat16)


def test_chunked_prefill_with_window_equals_one_prefill():
    """Chunks of 13 queries over a 70-token prompt, window 20: each chunk's rows equal the whole
    prompt's, whether the window reaches into the cached prefix or not."""
    window = 20
    args, _, _ = make_prefill_batch([(70, 70)], 16, 4, 2, 32, torch.float32)
    q, k_cache, v_cache, _, _, _, _, block_tables, scale = args
    whole = prefill_attention_ref(*args, sliding_window=window)
    for start in range(0, 70, 13):
        end = min(start + 13, 70)
        cu_q = torch.tensor([0, end - start], dtype=torch.int32, device=q.device)
        cu_k = torch.tensor([0, end], dtype=torch.int32, device=q.device)
        chunk = (q[start:end], k_cache, v_cache, cu_q, cu_k, end - start, end, block_tables, scale)
        for attend in (prefill_attention, prefill_attention_ref):
            assert_attention_close(attend(*chunk, sliding_window=window), whole[start:end], torch.float32)


@pytest.mark.parametrize("window, block_size", [(1, 16), (15, 8), (16, 16), (17, 16), (50, 8), (200, 16)])
def test_decode_attention_with_window_matches_ref(window, block_size):
    args, _, _ = make_decode_batch([1, 15, 16, 17, 64, 100], block_size, 4, 2, 32, torch.float32)
    assert_attention_close(decode_attention(*args, sliding_window=window),
                           decode_attention_ref(*args, sliding_window=window), torch.float32)


@pytest.mark.parametrize("num_splits", [1, 2, 5])
def test_decode_attention_with_window_is_the_same_for_any_number_of_splits(num_splits):
    args, _, _ = make_decode_batch([1, 17, 64, 100], 16, 4, 2, 32, torch.float32)
    cfg = _decode_config(32, torch.float32, args[0].device)
    for window in (7, 33):
        out = _decode_attention_launch(*args, num_splits=num_splits, **cfg, sliding_window=window)
        assert_attention_close(out, decode_attention_ref(*args, sliding_window=window), torch.float32)


def test_decode_attention_with_window_gives_zeros_for_empty_padding_rows():
    args, _, _ = make_decode_batch([5, 40], 16, 4, 2, 32, torch.float32)
    q, k_cache, v_cache, block_tables, lens, scale = args
    q = torch.cat([q, torch.randn_like(q)])
    block_tables = torch.cat([block_tables, torch.full_like(block_tables, -1)])
    lens = torch.cat([lens, torch.zeros_like(lens)])
    out = decode_attention(q, k_cache, v_cache, block_tables, lens, scale, sliding_window=8)
    assert torch.equal(out[2:], torch.zeros_like(out[2:]))
    assert_attention_close(out, decode_attention_ref(q, k_cache, v_cache, block_tables, lens, scale,
                                                     sliding_window=8), torch.float32)


@gpu
@needs_cuda
@pytest.mark.parametrize("block_size", [16, 256])
@pytest.mark.parametrize("window", [1, 64, 512, 4096])
def test_window_kernels_match_refs_at_real_sizes(block_size, window):
    spans = [(1024, 1024), (300, 1500), (1, 700), (129, 129)]
    args, _, _ = make_prefill_batch(spans, block_size, 16, 8, 128, torch.bfloat16)
    assert_attention_close(prefill_attention(*args, sliding_window=window),
                           prefill_attention_ref(*args, sliding_window=window), torch.bfloat16)
    args, _, _ = make_decode_batch([1, 700, 3000, 65], block_size, 16, 8, 128, torch.bfloat16)
    assert_attention_close(decode_attention(*args, sliding_window=window),
                           decode_attention_ref(*args, sliding_window=window), torch.bfloat16)


def test_attention_without_a_window_keeps_the_backend_functions_and_with_one_binds_it():
    from aios.layers.attention import Attention
    from aios.layers.backend import TORCH, TORCH_ATTENTION
    from aios.layers.rotary_embedding import RotaryEmbedding

    rope = RotaryEmbedding(32, 64, 10000.0)
    assert Attention(4, 2, 32, 0.1, rope, TORCH).attn_backend is TORCH_ATTENTION   # Qwen3's path, untouched
    windowed = Attention(4, 2, 32, 0.1, rope, TORCH, sliding_window=8).attn_backend
    assert windowed.prefill_attention.keywords == windowed.decode_attention.keywords == {"sliding_window": 8}
    assert windowed.store_kvcache is TORCH_ATTENTION.store_kvcache
    with pytest.raises(ValueError, match="sliding_window"):
        Attention(4, 2, 32, 0.1, rope, TORCH, sliding_window=0)


@pytest.fixture(scope="module")
def sliding_ckpts(tmp_path_factory) -> dict[str, str]:
    from aios.utils.tiny_sliding_checkpoints import make_gemma3_checkpoint, make_mistral_checkpoint

    return {"mistral": make_mistral_checkpoint(str(tmp_path_factory.mktemp("m")), sliding_window=6),
            "gemma3": make_gemma3_checkpoint(str(tmp_path_factory.mktemp("g")), sliding_window=6)}


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_the_triton_backend_runs_the_window_and_gemma_kernels_and_computes_what_the_references_do(
        sliding_ckpts, family, triton_launches):  # noqa: F811 (the imported fixture)
    """The GPU's path (interpreted here): windowed prefill + decode kernels, and for Gemma 3 the
    fused (1 + weight) RMSNorm and GeGLU kernels, inside the model, against the torch backend."""
    prompt = [11, 3, 250, 17, 9, 42, 100, 5, 77, 31, 8, 64, 2, 19, 300, 12, 6]   # 17 tokens, window 6
    ref = one_prefill_and_one_decode(sliding_ckpts[family], TORCH, prompt)
    assert triton_launches == []
    got = one_prefill_and_one_decode(sliding_ckpts[family], TRITON, prompt)
    assert (got - ref).abs().max().item() < 1e-4
    assert {"_prefill_attention_kernel", "_decode_split_kernel", "_rms_norm_kernel",
            "_silu_and_mul_kernel"} <= set(triton_launches)
