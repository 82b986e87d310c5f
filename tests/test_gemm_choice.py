"""aios/layers/gemm_choice.py: Config.decode_gemm='auto' times cuBLAS, cuBLASLt and skinny_gemm per
(layer shape, row count) at start-up, and each linear layer sends each row count to the one that won.

The timing is the GPU's; here a fake clock decides, and the layers then run under Triton's interpreter
(skinny_gemm) or a stand-in for cuBLASLt (the CPU build of torch has no cuBLASLt to prefer)."""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from aios.layers.gemm_choice import MARGIN, assign_gemms, choose_gemms  # noqa: E402
from aios.layers.linear import GEMMS  # noqa: E402


def fake_clock(share):
    """time_fn: cuBLAS takes 10 us; another GEMM share(gemm, n, k, m) of that (1.0 unless it says).
    Records every call."""
    calls = []

    def time_fn(gemm, m, n, k, dtype, device):
        calls.append((gemm, m, n, k))
        return 10.0 if gemm == "cublas" else 10.0 * (share(gemm, n, k, m) or 1.0)
    return time_fn, calls


def test_a_row_count_goes_to_the_fastest_gemm_only_where_it_beat_cublas_by_the_margin():
    def share(gemm, n, k, m):
        if (n, k) == (64, 32):          # skinny wins at every row count; cuBLASLt faster still at 8
            return {"skinny": 0.5, "cublaslt": 0.4 if m == 8 else 0.9}[gemm]
        if gemm == "cublaslt":          # (48, 16): cuBLASLt wins by the margin at 2 and 16, not at 8
            return MARGIN + 0.01 if m == 8 else MARGIN - 0.01
        return 1.5                      # skinny slower than cuBLAS
    time_fn, calls = fake_clock(share)
    table = choose_gemms([(64, 32), (48, 16), (64, 32)], [1, 2, 8, 300, 16], torch.float32,
                         torch.device("cpu"), time_fn)
    assert table == {(64, 32): {2: "skinny", 8: "cublaslt", 16: "skinny"}, (48, 16): {2: "cublaslt", 16: "cublaslt"}}
    # one timing per (shape, row count, GEMM): 1 row (the gemv's) and 300 (past MAX_ROWS) are not timed
    assert sorted(calls) == sorted((gemm, m, n, k) for n, k in [(64, 32), (48, 16)] for m in (2, 8, 16)
                                   for gemm in GEMMS)


def test_each_layer_runs_each_row_count_on_the_gemm_its_shape_won_and_the_tokens_stay(tiny_ckpt, monkeypatch):
    import aios.layers.linear as linear
    from aios import LLM, SamplingParams

    prompts = [[5, 9, 14, 2, 77], [3, 8], [40, 41, 42], [7] * 9]
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    want = [o["token_ids"] for o in LLM(tiny_ckpt, device="cpu").generate(prompts, params, use_tqdm=False)]
    llm = LLM(tiny_ckpt, device="cpu")
    model = llm.model_runner.model
    shapes = sorted({tuple(m.weight.shape) for m in model.modules() if isinstance(m, linear.LinearBase)})
    skinny_shape, lt_shape = shapes[0], shapes[-1]      # one shape wins skinny at 4 rows, one cuBLASLt at 2
    time_fn, _ = fake_clock(lambda gemm, n, k, m: 0.5 if ((n, k), m, gemm) in (
        (skinny_shape, 4, "skinny"), (lt_shape, 2, "cublaslt")) else 2.0)
    table = assign_gemms(model, [1, 2, 4, 8], torch.float32, torch.device("cpu"), time_fn)
    assert table[skinny_shape] == {4: "skinny"} and table[lt_shape] == {2: "cublaslt"}
    assert all(not rows for shape, rows in table.items() if shape not in (skinny_shape, lt_shape))
    sent = []
    kernel = linear.skinny_gemm
    monkeypatch.setattr(linear, "skinny_gemm", lambda x, w: sent.append(("skinny", tuple(w.shape), x.shape[0]))
                        or kernel(x, w))
    monkeypatch.setattr(linear, "cublaslt_linear", lambda x, w: sent.append(("cublaslt", tuple(w.shape), x.shape[0]))
                        or F.linear(x, w))
    got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == want
    # the four requests decode together (4 rows a step; no step has 2 rows: the next test's)
    assert sent and set(sent) == {("skinny", skinny_shape, 4)}


def test_two_rows_of_a_batch_go_to_cublaslt_when_it_won_them(tiny_ckpt, monkeypatch):
    """A decode step of exactly 2 sequences reaches the cuBLASLt entry (the step above never has 2)."""
    import aios.layers.linear as linear
    from aios import LLM, SamplingParams

    prompts = [[5, 9, 14, 2, 77], [3, 8]]
    params = SamplingParams(max_tokens=3, ignore_eos=True)
    want = [o["token_ids"] for o in LLM(tiny_ckpt, device="cpu").generate(prompts, params, use_tqdm=False)]
    llm = LLM(tiny_ckpt, device="cpu")
    time_fn, _ = fake_clock(lambda gemm, n, k, m: 0.5 if gemm == "cublaslt" else 2.0)
    assign_gemms(llm.model_runner.model, [2], torch.float32, torch.device("cpu"), time_fn)
    sent = []
    monkeypatch.setattr(linear, "cublaslt_linear", lambda x, w: sent.append(x.shape[0]) or F.linear(x, w))
    assert [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)] == want
    assert sent and set(sent) == {2}


@pytest.mark.parametrize("value, ok", [("cublas", True), ("skinny", True), ("auto", True), (True, False),
                                       ("cublaslt", False)])
def test_config_takes_decode_gemm_cublas_skinny_or_auto(tiny_ckpt, value, ok):
    from aios.config import Config

    if ok:
        assert Config(tiny_ckpt, device="cpu", decode_gemm=value).decode_gemm == value
    else:
        with pytest.raises(ValueError, match="decode_gemm must be 'cublas', 'skinny' or 'auto'"):
            Config(tiny_ckpt, device="cpu", decode_gemm=value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cublaslt_linear_equals_f_linear_and_restores_the_preferred_backend():
    from aios.layers.cublaslt import cublaslt_linear

    before = torch.backends.cuda.preferred_blas_library()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(96, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g) / 64
    torch.testing.assert_close(cublaslt_linear(x, w).float(), x.float() @ w.float().T, atol=3e-2, rtol=3e-2)
    assert torch.backends.cuda.preferred_blas_library() == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_engine_on_the_gpu_times_every_shape_and_gives_hfs_greedy_tokens(tiny_ckpt):
    from aios import LLM
    from helpers import greedy, hf_greedy, random_prompts

    prompts = random_prompts(512, [3, 9, 30, 50, 70, 17, 120], seed=31)
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", decode_gemm="auto", max_model_len=512,
              num_kvcache_blocks=64, max_num_seqs=16)
    layers = [m for m in llm.model_runner.model.modules() if hasattr(m, "gemm_by_rows")]
    assert layers and all(set(m.gemm_by_rows.values()) <= {"cublaslt", "skinny"} for m in layers)
    assert greedy(llm, prompts, 16) == hf_greedy(tiny_ckpt, prompts, 16)
