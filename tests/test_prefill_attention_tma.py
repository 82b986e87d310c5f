"""prefill_attention_tma, the Hopper TMA variant of the paged prefill attention, equals
prefill_attention_ref: chunks after cached prefixes, several ragged sequences, GQA, one-token spans,
sliding windows, over NaN-poisoned caches (a read of a free slot that reaches the output fails).

On the CPU Triton's interpreter runs the kernel: it executes tensor descriptors (triton 3.9: a
descriptor load reads the box, zeros past the tensor), so both key-loop structures run here at
tiny tiles (WARP_SPECIALIZE=False: prefill_attention's three loops; True: the one masked loop the
warp-specialized kernel needs). The interpreter ignores warp specialization and has no TMA unit:
that the kernel compiles for sm_90 (TMA, warp groups, shared memory) is checked by
tests/test_triton_compiles_for_hopper.py; that it is right on the GPU, by the `gpu` tests below
(every tile of TMA_TILES at real sizes), for the lead:
`python -m pytest -q tests/test_prefill_attention_tma.py -m gpu`.
"""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from test_kernels import PREFILL_SPANS, assert_attention_close, make_prefill_batch  # noqa: E402

from aios.kernels.prefill_attention import prefill_attention_ref  # noqa: E402
from aios.kernels.prefill_attention_tma import (  # noqa: E402
    TMA_TILES,
    WS_TILES,
    _prefill_attention_tma_launch,
    _tma_config,
    prefill_attention_tma,
)

gpu = pytest.mark.gpu
needs_hopper = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
                                  reason="needs an sm_90 GPU (TMA)")
# one-token spans, a span crossing 16-row tiles, chunks after a cached prefix (5 of 40, 1 of 33, 33 of 70)
RAGGED_SPANS = PREFILL_SPANS


def launch(args, warp_specialize, block_m=16, block_n=16, sliding_window=None, num_warps=4, num_stages=1,
           allow_warp_specialize=True):
    q, k_cache, v_cache, cu_q, cu_k, max_q, _, block_tables, scale = args
    return _prefill_attention_tma_launch(q, k_cache, v_cache, cu_q, cu_k, max_q, block_tables, scale, block_m,
                                         block_n, num_warps, num_stages, warp_specialize, sliding_window=sliding_window,
                                         allow_warp_specialize=allow_warp_specialize)


@pytest.mark.parametrize("warp_specialize", [False, True])
@pytest.mark.parametrize("num_heads, num_kv_heads, dtype", [(4, 4, torch.bfloat16), (8, 2, torch.float16)])
def test_both_loop_structures_equal_the_ref(warp_specialize, num_heads, num_kv_heads, dtype):
    args, _, _ = make_prefill_batch(RAGGED_SPANS, 16, num_heads, num_kv_heads, 64, dtype)
    assert_attention_close(launch(args, warp_specialize), prefill_attention_ref(*args), dtype)


@pytest.mark.parametrize("warp_specialize", [False, True])
@pytest.mark.parametrize("window", [7, 20])
def test_a_sliding_window_equals_the_ref(warp_specialize, window):
    # 16-key tiles over 32-token blocks: window edges land inside, at and across tiles
    args, _, _ = make_prefill_batch(RAGGED_SPANS + [(16, 48)], 32, 4, 2, 64, torch.bfloat16)
    assert_attention_close(launch(args, warp_specialize, sliding_window=window),
                           prefill_attention_ref(*args, sliding_window=window), torch.bfloat16)


@pytest.mark.parametrize("block_m, block_n", [(32, 16), (16, 32)])
def test_tiles_taller_or_wider_than_16_equal_the_ref(block_m, block_n):
    """32 query rows over 16-key tiles (two diagonal tiles a row tile), and 32-key tiles filling a block."""
    args, _, _ = make_prefill_batch(RAGGED_SPANS, 32, 4, 2, 64, torch.bfloat16)
    for warp_specialize in (False, True):
        assert_attention_close(launch(args, warp_specialize, block_m, block_n), prefill_attention_ref(*args),
                               torch.bfloat16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the wrapper's CPU tiles (on the GPU: Hopper's, below)")
def test_the_wrapper_equals_the_ref_on_chunks_of_one_prompt_and_on_strided_q():
    """prefill_attention_tma's own tiles; q a view of a fused qkv row (rows strided), as the engine's."""
    args, _, _ = make_prefill_batch([(70, 70)], 16, 8, 2, 64, torch.bfloat16)
    q, k_cache, v_cache, _, _, _, _, block_tables, scale = args
    whole = prefill_attention_ref(*args)
    for start in range(0, 70, 26):
        end = min(start + 13, 70)
        qkv = torch.cat([q[start:end].flatten(1), torch.randn(end - start, 4 * 64).to(q)], dim=1)
        chunk_q = qkv[:, :8 * 64].view(end - start, 8, 64)
        cu_q = torch.tensor([0, end - start], dtype=torch.int32)
        cu_k = torch.tensor([0, end], dtype=torch.int32)
        out = prefill_attention_tma(chunk_q, k_cache, v_cache, cu_q, cu_k, end - start, end, block_tables, scale)
        assert_attention_close(out, whole[start:end], torch.bfloat16)


def test_where_it_does_not_apply_it_says_so(monkeypatch):
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    with pytest.raises(ValueError, match="bf16 or fp16"):
        _tma_config(128, torch.float32, cpu, 256)
    with pytest.raises(ValueError, match="head_dim"):
        _tma_config(96, bf16, cpu, 256)
    with pytest.raises(ValueError, match="block size"):
        _tma_config(128, bf16, cpu, 8)
    monkeypatch.setattr("aios.kernels.device._cuda_capability", lambda index: (8, 0))
    with pytest.raises(ValueError, match="sm_90"):
        _tma_config(128, bf16, torch.device("cuda", 0), 256)
    monkeypatch.setattr("aios.kernels.device._cuda_capability", lambda index: (9, 0))
    assert _tma_config(128, bf16, torch.device("cuda", 0), 256)["block_n"] == TMA_TILES[0][1]
    with pytest.raises(ValueError, match="block size"):   # 128-key tiles cross 16-token blocks
        _tma_config(128, bf16, torch.device("cuda", 0), 16)


def test_a_warp_specialized_tile_is_refused_unless_asked_for():
    """WS_TILES never finished on the H200 (triton 3.6): a plain launch is a ValueError, not a hang."""
    args, _, _ = make_prefill_batch([(40, 40)], 32, 4, 2, 64, torch.bfloat16)
    with pytest.raises(ValueError, match="warp-specialized"):
        launch(args, True, allow_warp_specialize=False)


def test_every_tile_fits_the_engines_block_size_and_warp_specializes_at_4_warps():
    """Each key tile sits in one 256-token block; a warp-specialized tile has 4 warps (the Hopper pass
    leaves 8 unspecialized, module docstring)."""
    for block_m, block_n, num_warps, num_stages, warp_specialize in TMA_TILES + WS_TILES:
        assert warp_specialize == ((block_m, block_n, num_warps, num_stages, warp_specialize) in WS_TILES)
        assert 256 % block_n == 0 and block_m & (block_m - 1) == 0 and block_m >= 16
        assert num_warps == 4 or not warp_specialize
        assert 1 <= num_stages <= 4


# ---------------------------------------------------------------------------------------------
# GPU: Qwen3-0.6B's 16/8 heads and 8B's 32/8, head_dim 128, bf16, block 256, every tile of TMA_TILES


def assert_rows_close(args, out, starts, rows=256, sliding_window=None):
    """Rows start..start+rows-1 of sequence 0 against the ref over the same cache, as chunks (the
    ref's fp32 scores of a whole 16k prompt would take 17-34 GB)."""
    q, k_cache, v_cache, cu_q, cu_k, _, _, block_tables, scale = args
    num_cached = int(cu_k[1] - cu_q[1])
    for start in starts:
        span_q = torch.tensor([0, rows], dtype=torch.int32, device=q.device)
        span_k = torch.tensor([0, num_cached + start + rows], dtype=torch.int32, device=q.device)
        want = prefill_attention_ref(q[start:start + rows], k_cache, v_cache, span_q, span_k, rows,
                                     num_cached + start + rows, block_tables, scale, sliding_window=sliding_window)
        assert_attention_close(out[start:start + rows], want, torch.bfloat16)


@gpu
@needs_hopper
@pytest.mark.parametrize("num_heads", [16, 32])
@pytest.mark.parametrize("tiles", TMA_TILES)
def test_ragged_chunks_after_prefixes_equal_the_ref_at_real_sizes(num_heads, tiles):
    # a 4k prompt, a chunk after a cached prefix crossing blocks, a 1-token chunk after 3,000 tokens
    spans = [(4096, 4096), (300, 1500), (1, 700), (129, 129), (1000, 4000), (1, 3001)]
    args, _, _ = make_prefill_batch(spans, 256, num_heads, 8, 128, torch.bfloat16)
    for window in (None, 512):
        out = launch(args, tiles[4], *tiles[:2], window, *tiles[2:4])
        assert_attention_close(out, prefill_attention_ref(*args, sliding_window=window), torch.bfloat16)


@gpu
@needs_hopper
@pytest.mark.parametrize("num_heads", [16, 32])
@pytest.mark.parametrize("tiles", TMA_TILES)
def test_a_16k_prompt_and_a_chunk_after_8k_cached_equal_the_ref_on_their_first_and_last_rows(num_heads, tiles):
    for spans in ([(16384, 16384)], [(8192, 16384)]):
        args, _, _ = make_prefill_batch(spans, 256, num_heads, 8, 128, torch.bfloat16)
        out = launch(args, tiles[4], *tiles[:2], None, *tiles[2:4])
        assert_rows_close(args, out, (0, spans[0][0] // 2, spans[0][0] - 256))


@gpu
@needs_hopper
def test_the_wrapper_takes_its_hopper_tile_on_an_h200():
    args, _, _ = make_prefill_batch([(2048, 8192), (1, 100)], 256, 32, 8, 128, torch.bfloat16)
    assert_attention_close(prefill_attention_tma(*args), prefill_attention_ref(*args), torch.bfloat16)


def test_an_engine_built_with_triton_tma_refuses_at_start_up_what_the_kernel_cannot_run(tiny_ckpt):
    """attention_backend="triton-tma" is checked against the model, dtype, GPU and block size when
    the engine is built (Backend.from_config), not inside a request's step. (On a CPU every backend
    is the references, so the check is the GPU's: here, the fp32 refusal through a GPU-side Cfg.)"""
    from aios.config import ModelConfig
    from aios.layers.backend import Backend

    class Cfg:
        device, attention_backend, fused_kernels, moe_gemm = "cuda", "triton-tma", True, "triton"
        fuse_norm_into_gemv = silu_in_gemv = False
        decode_gemm = "cublas"
        dtype, kvcache_block_size = torch.float32, 256
        hf_config = ModelConfig.from_dir(tiny_ckpt)

    with pytest.raises(ValueError, match="bf16 or fp16"):
        Backend.from_config(Cfg)
    Cfg.dtype = torch.bfloat16
    with pytest.raises(ValueError, match="head_dim"):          # the tiny model's head_dim is 32
        Backend.from_config(Cfg)


@gpu
@needs_hopper
def test_the_engine_with_triton_tma_computes_the_logits_of_the_paged_triton_kernel(tmp_path):
    """bf16 tokens can differ after a near-tie, so the first step's logits (a prefill of five fresh
    prompts, one crossing a block) are compared, engine against engine on the same weights."""
    from aios import LLM, SamplingParams
    from aios.layers.attention import Attention
    from aios.utils.tiny_checkpoint import make_checkpoint
    from helpers import random_prompts

    ckpt = make_checkpoint(str(tmp_path / "d128"), hidden_size=256, num_heads=4, num_kv_heads=2, head_dim=128)
    prompts = random_prompts(512, [5, 40, 300, 7, 64], seed=24)
    logits = []
    for backend in ("triton-tma", "triton"):
        with LLM(ckpt, device="cuda", dtype="bfloat16", max_model_len=512, num_kvcache_blocks=64,
                 attention_backend=backend) as llm:
            layers = [m for m in llm.model_runner.model.modules() if isinstance(m, Attention)]
            assert all((a.attn_backend.prefill_attention is prefill_attention_tma) == (backend == "triton-tma")
                       for a in layers)
            for p in prompts:
                llm.add_request(p, SamplingParams(temperature=0, max_tokens=4))
            inputs = llm.model_runner.prepare_inputs(llm.scheduler.schedule())
            assert inputs.is_prefill
            logits.append(llm.model_runner.execute(inputs).float())
    assert (logits[0] - logits[1]).abs().max().item() < 0.05 * logits[1].abs().max().item()
