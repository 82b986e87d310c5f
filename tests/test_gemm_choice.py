"""aios/layers/gemm_choice.py: Config.skinny_gemm='auto' times cuBLAS against skinny_gemm per (layer
shape, row count) at start-up, and each linear layer sends skinny_gemm only the row counts it won.

The timing is the GPU's; here a fake clock decides, and the layers then run under Triton's interpreter."""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from aios.layers.gemm_choice import MARGIN, assign_skinny_rows, choose_skinny_rows  # noqa: E402


def fake_clock(skinny_share):
    """time_fn: cuBLAS takes 10 us; skinny_gemm skinny_share(n, k, m) of that. Records every call."""
    calls = []

    def time_fn(kernel, m, n, k, dtype, device):
        calls.append((kernel, m, n, k))
        return 10.0 if kernel == "cublas" else 10.0 * skinny_share(n, k, m)
    return time_fn, calls


def test_a_row_count_goes_to_skinny_gemm_only_where_it_beat_cublas_by_the_margin():
    share = {(64, 32): lambda m: 0.5, (48, 16): lambda m: MARGIN + 0.01 if m == 8 else MARGIN - 0.01}
    time_fn, calls = fake_clock(lambda n, k, m: share[(n, k)](m))
    table = choose_skinny_rows([(64, 32), (48, 16), (64, 32)], [1, 2, 8, 300, 16], torch.float32,
                               torch.device("cpu"), time_fn)
    assert table == {(64, 32): frozenset({2, 8, 16}), (48, 16): frozenset({2, 16})}
    # one timing per (shape, row count, kernel): 1 row (the gemv's) and 300 (past MAX_ROWS) are not timed
    assert sorted(calls) == sorted((kern, m, n, k) for n, k in [(64, 32), (48, 16)] for m in (2, 8, 16)
                                   for kern in ("cublas", "skinny"))


def test_each_layer_runs_the_row_counts_its_shape_won_and_the_tokens_stay(tiny_ckpt, monkeypatch):
    import aios.layers.linear as linear
    from aios import LLM, SamplingParams

    prompts = [[5, 9, 14, 2, 77], [3, 8], [40, 41, 42], [7] * 9]
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    want = [o["token_ids"] for o in LLM(tiny_ckpt, device="cpu").generate(prompts, params, use_tqdm=False)]
    llm = LLM(tiny_ckpt, device="cpu")
    model = llm.model_runner.model
    shapes = sorted({tuple(m.weight.shape) for m in model.modules() if isinstance(m, linear.LinearBase)})
    winner = shapes[0]                                   # only this shape wins, and only at 4 rows
    time_fn, _ = fake_clock(lambda n, k, m: 0.5 if (n, k) == winner and m == 4 else 2.0)
    table = assign_skinny_rows(model, [1, 2, 4, 8], torch.float32, torch.device("cpu"), time_fn)
    assert table[winner] == {4} and all(not rows for shape, rows in table.items() if shape != winner)
    sent = []
    kernel = linear.skinny_gemm
    monkeypatch.setattr(linear, "skinny_gemm", lambda x, w: sent.append((tuple(w.shape), x.shape[0])) or kernel(x, w))
    got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == want
    assert sent and set(sent) == {(winner, 4)}          # the decode steps of 4 sequences, that layer only


@pytest.mark.parametrize("value, ok", [(False, True), (True, True), ("auto", True), ("on", False), (1, False)])
def test_config_takes_skinny_gemm_false_true_or_auto(tiny_ckpt, value, ok):
    from aios.config import Config

    if ok:
        assert Config(tiny_ckpt, device="cpu", skinny_gemm=value).skinny_gemm == value
    else:
        with pytest.raises(ValueError, match="skinny_gemm must be False, True or 'auto'"):
            Config(tiny_ckpt, device="cpu", skinny_gemm=value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_engine_on_the_gpu_times_every_shape_and_gives_hfs_greedy_tokens(tiny_ckpt):
    from aios import LLM
    from helpers import greedy, hf_greedy, random_prompts

    prompts = random_prompts(512, [3, 9, 30, 50, 70, 17, 120], seed=31)
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", skinny_gemm="auto", max_model_len=512,
              num_kvcache_blocks=64, max_num_seqs=16)
    layers = [m for m in llm.model_runner.model.modules() if hasattr(m, "skinny_rows")]
    assert layers and all(isinstance(m.skinny_rows, frozenset) for m in layers)
    assert greedy(llm, prompts, 16) == hf_greedy(tiny_ckpt, prompts, 16)
