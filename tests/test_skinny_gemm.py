"""aios/kernels/skinny_gemm.py: y = x @ W^T for a few rows, against its torch spec (F.linear).

On the CPU the kernel runs under Triton's interpreter at small shapes; on a GPU at the Qwen3 shapes'
decode sizes and inside a CUDA graph."""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import aios.kernels.skinny_gemm as skinny_gemm_module  # noqa: E402
from aios.kernels.skinny_gemm import (  # noqa: E402
    MAX_ROWS,
    skinny_gemm,
    skinny_gemm_config,
    skinny_gemm_ref,
    tma_applies,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def operands(m, n, k, dtype, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype).to(device)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype).to(device)
    return x, w


@pytest.mark.parametrize("m", [1, 2, 3, 16, 17, 64, 65, 200, 256])
@pytest.mark.parametrize("n, k", [(48, 64), (50, 33), (16, 100)])       # tails in N and K
def test_skinny_gemm_equals_f_linear_in_fp32(m, n, k):
    x, w = operands(m, n, k, torch.float32)
    torch.testing.assert_close(skinny_gemm(x, w), skinny_gemm_ref(x, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split_k", [2, 3, 5])
@pytest.mark.parametrize("m, n, k", [(3, 40, 200), (17, 16, 100)])
def test_split_k_partials_sum_to_f_linear_and_a_split_count_that_leaves_one_empty_shrinks(m, n, k, split_k):
    """Splits of whole K tiles (32 under the interpreter): K = 100 in 5 splits is 4 of 32, 32, 32, 4."""
    x, w = operands(m, n, k, torch.float32, seed=split_k)
    torch.testing.assert_close(skinny_gemm(x, w, split_k=split_k), skinny_gemm_ref(x, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("m, n, k, split_k", [(1, 48, 64, None), (17, 50, 72, None), (65, 16, 104, 3),
                                              (200, 40, 64, 2)])
def test_the_tma_kernel_equals_f_linear_and_its_boxes_past_m_and_k_read_zeros(m, n, k, split_k):
    """TMA boxes past M (rows padded to BLOCK_M), past N (masked store) and past K (72 = 2 tiles of 32
    and a tail of 8; 104 in 3 splits of 2 tiles, the last one a tile and a tail)."""
    x, w = operands(m, n, k, torch.float32, seed=m)
    torch.testing.assert_close(skinny_gemm(x, w, split_k=split_k, tma=True), skinny_gemm_ref(x, w),
                               atol=1e-5, rtol=1e-5)


def test_the_tma_kernel_refuses_rows_that_are_not_16_byte_aligned_by_name():
    x, w = operands(4, 16, 36, torch.float16)                      # 72-byte rows: TMA needs multiples of 16
    assert not tma_applies(x, w) and tma_applies(*operands(4, 16, 40, torch.float16))
    with pytest.raises(ValueError, match="16-byte aligned"):
        skinny_gemm(x, w, tma=True)
    torch.testing.assert_close(skinny_gemm(x, w).float(), skinny_gemm_ref(x, w).float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_skinny_gemm_keeps_half_precision_and_accumulates_in_fp32(dtype):
    x, w = operands(5, 40, 96, dtype)
    y = skinny_gemm(x, w)
    assert y.dtype == dtype and y.shape == (5, 40)
    exact = x.float() @ w.float().T
    torch.testing.assert_close(y.float(), exact, atol=2e-2, rtol=2e-2)


def test_rows_of_x_do_not_leak_into_each_other_and_strided_x_is_read_by_its_stride():
    """Rows of a wider buffer (stride > K): each output row is its own row's product."""
    big = torch.randn(6, 80, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    x = big[:, :64]                                          # row stride 80, K = 64
    _, w = operands(6, 32, 64, torch.float32, seed=4)
    y = skinny_gemm(x, w)
    for i in range(6):
        torch.testing.assert_close(y[i], w @ x[i], atol=1e-5, rtol=1e-5)


def test_the_config_pads_rows_to_a_dot_tile_of_at_least_16():
    cpu = torch.device("cpu")
    assert [skinny_gemm_config(m, 64, 64, cpu)["block_m"] for m in (1, 2, 16, 17, 33, 64)] == [16, 16, 16, 32, 64, 64]


def test_the_gpu_config_splits_k_only_where_the_tiles_of_w_leave_sms_idle(monkeypatch):
    """132 SMs (an H200): the 8B gate_up's 384 tiles of W need no split, its o_proj's 64 get 8 (512
    programs: 256 are still < 2 an SM); a split keeps >= 4 tiles of K, so the 0.6B o_proj (K = 2,048)
    stops at 4 though 16 tiles x 4 < 264."""
    monkeypatch.setattr(skinny_gemm_module, "sm_count", lambda device: 132)
    gpu = torch.device("cuda")
    splits = {(n, k): skinny_gemm_config(32, n, k, gpu)["split_k"]
              for n, k in [(24576, 4096), (4096, 4096), (6144, 4096), (4096, 12288), (1024, 2048)]}
    assert splits == {(24576, 4096): 1, (4096, 4096): 8, (6144, 4096): 4, (4096, 12288): 8, (1024, 2048): 4}
    # past 64 rows the fp32 partials count: 182 rows of the 8B o_proj split in 2 (K >= 8 M a split), not 8
    wide = {(n, k): skinny_gemm_config(182, n, k, gpu) for n, k in [(4096, 4096), (4096, 12288), (24576, 4096)]}
    assert {nk: c["split_k"] for nk, c in wide.items()} == {(4096, 4096): 2, (4096, 12288): 8, (24576, 4096): 1}
    assert {c["block_m"] for c in wide.values()} == {256} and {c["num_warps"] for c in wide.values()} == {8}


@pytest.mark.parametrize("x_shape, w_shape, dtype_w, match", [
    ((MAX_ROWS + 1, 32), (16, 32), torch.float32, "1 ... 256 rows"),
    ((0, 32), (16, 32), torch.float32, "1 ... 256 rows"),
    ((4, 32), (16, 48), torch.float32, "columns"),
    ((4, 32), (16, 32), torch.float64, "dtype"),
])
def test_skinny_gemm_refuses_operands_it_cannot_multiply(x_shape, w_shape, dtype_w, match):
    x = torch.zeros(x_shape, device=DEVICE)
    w = torch.zeros(w_shape, dtype=dtype_w, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        skinny_gemm(x, w)
    with pytest.raises(ValueError, match="contiguous"):
        skinny_gemm(torch.zeros(4, 32, device=DEVICE).t().contiguous().t(), torch.zeros(16, 32, device=DEVICE))
    with pytest.raises(ValueError, match="split_k"):
        skinny_gemm(torch.zeros(4, 32, device=DEVICE), torch.zeros(16, 32, device=DEVICE), split_k=0)


def test_an_engine_with_skinny_gemm_runs_its_few_row_matmuls_through_it_and_keeps_the_tokens(tiny_ckpt, monkeypatch):
    """Backend.skinny_gemm (Config.skinny_gemm on a GPU): the Linear layers send 2 ... 64 rows to the
    kernel (here under the interpreter), one row to the gemv, more to F.linear; greedy tokens as the
    reference engine's."""
    import aios.layers.linear as linear
    from aios import LLM, SamplingParams
    from aios.layers.backend import TORCH_ATTENTION, Backend

    prompts = [[5, 9, 14, 2, 77], [3, 8], [40, 41, 42], [7] * 70]           # the last prompt: 70 rows, cuBLAS
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    want = [o["token_ids"] for o in LLM(tiny_ckpt, device="cpu").generate(prompts, params, use_tqdm=False)]
    rows = []
    kernel = linear.skinny_gemm
    monkeypatch.setattr(linear, "skinny_gemm", lambda x, w: rows.append(x.shape[0]) or kernel(x, w))
    llm = LLM(tiny_ckpt, device="cpu", backend=Backend(TORCH_ATTENTION, fused_kernels=True, skinny_gemm=True))
    got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == want
    assert rows and set(rows) <= set(range(2, 65)) and 4 in rows     # the decode steps of 4 sequences


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("m", [2, 8, 32, 64, 100, 182, 256])
@pytest.mark.parametrize("n, k", [(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288), (4096, 1024)])
@pytest.mark.parametrize("tma", [False, True])
def test_skinny_gemm_equals_f_linear_at_the_decode_sizes_on_the_gpu(m, n, k, tma):
    x, w = operands(m, n, k, torch.bfloat16)
    torch.testing.assert_close(skinny_gemm(x, w, tma=tma).float(), x.float() @ w.float().T, atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("tma", [False, True])
def test_skinny_gemm_replays_in_a_cuda_graph_with_new_inputs(tma):
    """New values in the captured x (the TMA kernel's descriptor, a kernel parameter, keeps x's address)."""
    x, w = operands(32, 4096, 4096, torch.bfloat16)
    skinny_gemm(x, w, tma=tma)                               # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = skinny_gemm(x, w, tma=tma)
    for seed in range(3):
        x.copy_(operands(32, 4096, 4096, torch.bfloat16, seed=10 + seed)[0])
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(y.float(), x.float() @ w.float().T, atol=3e-2, rtol=3e-2)
