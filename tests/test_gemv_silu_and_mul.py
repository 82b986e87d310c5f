"""The gate_up gemv with SiLU(gate) * up in its epilogue (aios/kernels/gemv_silu_and_mul.py), and the
SiLU-gated MLPs' one-row path that runs it (`Config.silu_in_gemv`).

- It rounds where gemv then silu_and_mul round: with the same K tiles, bit for bit, tails included.
- With inputs whose dot products are exact in fp32 (so no summation order matters), it is the
  activation kernel applied to the reference's gate_up + bias, bit for bit: gate row i is paired
  with up row I + i, and each bias half with its rows.
- Under tensor parallelism the ranks' outputs, side by side, are the unsplit layer's, bit for bit.
- A model of every dense SiLU family built with it runs it once per layer for a one-token step (and
  only then), no separate SiLU kernel, and gives the references' logits; with the norm fusion on
  too, the layer's forward_one_row wins.
- On a GPU (marked gpu): real sizes, CUDA-graph replay, the engine's batch-1 greedy tokens equal
  HF's, eager and with CUDA graphs, on one GPU and under TP=2.
On a CPU the kernels run under Triton's interpreter, which rounds fp32 -> bf16 toward zero where
GPUs round to nearest even: so the kernel is compared bit for bit with the other Triton kernels,
and with the torch reference (which rounds to nearest) to an ulp or so.
"""

import os

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit (i.e. importing aios.kernels)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_backend import triton_launches  # noqa: E402, F401 (a fixture)
from test_fused_gemv import (  # noqa: E402, F401 (dense_ckpt: a fixture)
    OneProcessTP,
    assert_batch_1_decode_equals_hf,
    dense_ckpt,
    logits_and_launches,
)

from aios import LLM, SamplingParams  # noqa: E402
from aios.config import ModelConfig  # noqa: E402
from aios.kernels import gemv, gemv_silu_and_mul, gemv_silu_and_mul_ref, silu_and_mul  # noqa: E402
from aios.kernels.gemv_silu_and_mul import gemv_silu_and_mul_config  # noqa: E402
from aios.layers.backend import TORCH, TORCH_ATTENTION, TRITON_ATTENTION, Backend  # noqa: E402
from aios.layers.linear import MergedColumnParallelLinear  # noqa: E402
from aios.models.qwen3 import Qwen3MLP  # noqa: E402
from aios.models.registry import build_model  # noqa: E402
from helpers import random_prompts  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DTYPES = [torch.float32, torch.bfloat16]
# (I, K, block_n, block_k): odd sizes with masked tails in both dimensions; one or several programs and K tiles
SHAPES = [(37, 100, None, None), (130, 200, 16, 64), (5, 33, 4, 32), (64, 96, 8, 32)]


def randn(*shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype).to(DEVICE)


def tiles(intermediate: int, k: int, block_n: int | None, block_k: int | None) -> dict:
    """The tiles the kernel runs with (its config where the test gives none)."""
    cfg = gemv_silu_and_mul_config(intermediate, k, torch.device(DEVICE))
    return dict(block_n=block_n or cfg["block_n"], block_k=block_k or cfg["block_k"])


def assert_close_to_the_reference(got, x, w, bias):
    """got == gemv_silu_and_mul_ref(x, w, bias) up to the gate and up sums' order and an ulp of each
    rounding after it: a few ulps of the dtype, relative to the largest output."""
    expected = gemv_silu_and_mul_ref(x, w, bias)
    assert got.shape == expected.shape == (1, w.shape[0] // 2) and got.dtype == expected.dtype
    ulps = 8 if INTERPRETED and got.dtype == torch.bfloat16 else 4       # truncation: up to 2x each rounding
    eps = torch.finfo(got.dtype).eps if got.dtype != torch.float32 else 1e-5
    scale = expected.float().abs().max().item()
    torch.testing.assert_close(got.float(), expected.float(), rtol=ulps * eps, atol=ulps * eps * scale)


def unfused(x, w, bias, block_n, block_k):
    """The three launches gemv_silu_and_mul replaces, on the same tiles: gemv, + bias, silu_and_mul."""
    gate_up = gemv(x, w, block_n=block_n, block_k=block_k)
    return silu_and_mul(gate_up if bias is None else gate_up + bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("intermediate, k, block_n, block_k", SHAPES)
def test_gemv_silu_and_mul_rounds_where_gemv_then_silu_and_mul_round(dtype, intermediate, k, block_n, block_k):
    gen = torch.Generator().manual_seed(intermediate + k)
    x = randn(1, k, dtype=dtype, gen=gen)
    w = randn(2 * intermediate, k, dtype=dtype, gen=gen, scale=3 * k ** -0.5)       # gate, up ~ N(0, 9)
    before = (x.clone(), w.clone())
    t = tiles(intermediate, k, block_n, block_k)
    y = gemv_silu_and_mul(x, w, **t)
    assert torch.equal(y, unfused(x, w, None, **t))
    assert_close_to_the_reference(y, x, w, None)
    assert torch.equal(x, before[0]) and torch.equal(w, before[1])


def exact_inputs(intermediate, k, dtype, gen):
    """x and the bias in quarters (|x| <= 1, |bias| <= 2), W in {-1, 0, 1}: every dot product, and it
    plus its bias, is a multiple of 1/4; below 64 in magnitude (the tests check) that is exact in
    fp32 whatever the summation order, and in bf16: nothing before the activation rounds."""
    x = (torch.randint(-4, 5, (1, k), generator=gen) / 4).to(dtype).to(DEVICE)
    w = torch.randint(-1, 2, (2 * intermediate, k), generator=gen).to(dtype).to(DEVICE)
    bias = (torch.randint(-8, 9, (2 * intermediate,), generator=gen) / 4).to(dtype).to(DEVICE)
    return x, w, bias


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("intermediate, k, block_n, block_k", SHAPES)
def test_with_exact_dot_products_it_is_the_activation_of_the_references_gate_up(dtype, with_bias, intermediate, k,
                                                                             block_n, block_k):
    gen = torch.Generator().manual_seed(7 * intermediate + k)
    x, w, bias = exact_inputs(intermediate, k, dtype, gen)
    bias = bias if with_bias else None
    gate_up = F.linear(x, w, bias)                                      # exact: nothing to round
    assert gate_up.abs().max().item() < 64
    y = gemv_silu_and_mul(x, w, bias, block_n=block_n, block_k=block_k)
    assert torch.equal(y, silu_and_mul(gate_up))                       # the activation kernel's roundings
    assert_close_to_the_reference(y, x, w, bias)


def test_under_tp_the_ranks_outputs_side_by_side_are_the_unsplit_layers():
    """Column-parallel gate_up: each rank holds [its gate rows; its up rows], so its row i and row
    I/tp + i are one feature's gate and up; the ranks' activations, concatenated, are the whole."""
    gen = torch.Generator().manual_seed(8)
    hidden, inter, dtype = 48, 40, torch.bfloat16
    x = randn(1, hidden, dtype=dtype, gen=gen)
    gate, up = (randn(inter, hidden, dtype=dtype, gen=gen, scale=3 * hidden ** -0.5) for _ in range(2))
    gate_bias, up_bias = (randn(inter, dtype=dtype, gen=gen) for _ in range(2))
    fused = Backend(TORCH_ATTENTION, fused_kernels=True, silu_in_gemv=True)
    block_n, block_k = 4, 32
    per_rank = []
    for rank in range(2):
        layer = MergedColumnParallelLinear(hidden, [inter, inter], bias=True, tp=OneProcessTP(rank, 2),
                                           backend=fused).to(device=DEVICE, dtype=dtype)
        for shard_id, (weight, bias) in enumerate(((gate, gate_bias), (up, up_bias))):
            layer.weight_loader(layer.weight, weight, shard_id)
            layer.weight_loader(layer.bias, bias, shard_id)
        per_rank.append(gemv_silu_and_mul(x, layer.weight, layer.bias, block_n=block_n, block_k=block_k))
        assert torch.equal(layer.forward_then_silu_and_mul(x), gemv_silu_and_mul(x, layer.weight, layer.bias))
    whole_w, whole_bias = torch.cat([gate, up]), torch.cat([gate_bias, up_bias])
    assert torch.equal(torch.cat(per_rank, 1),
                       gemv_silu_and_mul(x, whole_w, whole_bias, block_n=block_n, block_k=block_k))
    assert_close_to_the_reference(torch.cat(per_rank, 1), x, whole_w, whole_bias)


# ---------------------------------------------------------------------------------------------
# The MLPs' one-row path


def test_a_one_token_mlp_is_two_launches_and_computes_what_the_references_do(
        dense_ckpt, triton_launches):  # noqa: F811 (the imported fixtures)
    prompt = [11, 3, 250, 17, 9, 42, 100]
    ref, _, _ = logits_and_launches(dense_ckpt, TORCH, prompt, triton_launches)
    fused = Backend(TORCH_ATTENTION, fused_kernels=True, silu_in_gemv=True)
    got, (prefill, *decodes), num_layers = logits_and_launches(dense_ckpt, fused, prompt, triton_launches)
    assert (got - ref).abs().max().item() < 1e-4
    assert "_gemv_silu_and_mul_kernel" not in prefill and "_silu_and_mul_kernel" in prefill
    for decode in decodes:
        # per layer: gate_up + SiLU * up in one kernel; qkv_proj, o_proj and down_proj plain gemvs
        assert decode.count("_gemv_silu_and_mul_kernel") == num_layers
        assert decode.count("_gemv_kernel") == 3 * num_layers
        assert "_silu_and_mul_kernel" not in decode


def test_with_the_norm_fusion_on_too_the_layers_one_row_path_keeps_silu_in_down_proj(
        tiny_ckpt, triton_launches):  # noqa: F811 (the imported fixture)
    both = Backend(TORCH_ATTENTION, fused_kernels=True, fused_one_row=True, silu_in_gemv=True)
    _, (_, *decodes), num_layers = logits_and_launches(tiny_ckpt, both, [11, 3, 250, 17, 9, 42, 100], triton_launches)
    for decode in decodes:
        assert decode.count("_silu_mul_gemv_kernel") == num_layers and "_gemv_silu_and_mul_kernel" not in decode


def test_qwen3_moe_runs_it_in_its_dense_layers_only(tmp_path):
    from aios.utils.tiny_checkpoint_qwen3_moe import make_qwen3_moe_checkpoint

    path = make_qwen3_moe_checkpoint(str(tmp_path / "moe"), num_layers=2, mlp_only_layers=[0])
    with torch.device("meta"):
        model = build_model(ModelConfig.from_dir(path), max_model_len=64,
                            backend=Backend(TRITON_ATTENTION, fused_kernels=True, silu_in_gemv=True))
    dense, sparse = (layer.mlp for layer in model.model.layers)
    assert isinstance(dense, Qwen3MLP) and dense.silu_in_gemv
    assert not isinstance(sparse, Qwen3MLP) and not hasattr(sparse, "silu_in_gemv")


# ---------------------------------------------------------------------------------------------
# GPU: real sizes, a CUDA graph of the MLP's chain, the engine at batch 1

gpu = pytest.mark.gpu
# (I, K) per rank: Qwen3-0.6B and 8B gate_up, and both at TP=2
REAL_SIZES = [(3072, 1024), (12288, 4096), (1536, 1024), (6144, 4096)]


@gpu
@pytest.mark.parametrize("intermediate, k", REAL_SIZES)
def test_gemv_silu_and_mul_at_real_sizes(intermediate, k):
    gen = torch.Generator().manual_seed(intermediate + k)
    x = randn(1, k, dtype=torch.bfloat16, gen=gen)
    w = randn(2 * intermediate, k, dtype=torch.bfloat16, gen=gen, scale=2 * k ** -0.5)
    y = gemv_silu_and_mul(x, w)
    assert torch.equal(y, unfused(x, w, None, **tiles(intermediate, k, None, None)))
    assert_close_to_the_reference(y, x, w, None)
    x, w, bias = exact_inputs(intermediate, k, torch.bfloat16, gen)
    w = w * (torch.rand(w.shape, generator=gen) < 64 / k).to(w.dtype).to(DEVICE)   # ~64 terms a row: small sums
    assert F.linear(x, w, bias).abs().max().item() < 64
    assert torch.equal(gemv_silu_and_mul(x, w, bias), silu_and_mul(F.linear(x, w, bias)))


@gpu
def test_the_mlp_chain_replays_in_a_cuda_graph_with_new_inputs():
    """gate_up + SiLU -> down -> gate_up + SiLU, as consecutive layers chain them (each kernel reads
    what the one before wrote: PDL's wait must hold), captured once and replayed on new inputs: the
    replay equals the same kernels run eagerly, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    hidden, inter, dtype = 1024, 3072, torch.bfloat16
    x = randn(1, hidden, dtype=dtype, gen=gen)
    w_gate_up = randn(2 * inter, hidden, dtype=dtype, gen=gen, scale=2 * hidden ** -0.5)
    w_down = randn(hidden, inter, dtype=dtype, gen=gen, scale=inter ** -0.5)

    def chain():
        return gemv_silu_and_mul(gemv(gemv_silu_and_mul(x, w_gate_up), w_down), w_gate_up)

    chain()                                                          # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(3):
        x.copy_(randn(1, hidden, dtype=dtype, gen=gen))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, chain())


@gpu
def test_batch_1_decode_with_silu_in_gemv_gives_hf_greedy_tokens(
        dense_ckpt, triton_launches):  # noqa: F811 (the imported fixtures)
    """One request at a time, so every decode step is one row: the MLP's fused path, replayed from
    the batch-1 CUDA graph and run eagerly, against HF."""
    assert_batch_1_decode_equals_hf(dense_ckpt, triton_launches, 43, ("_gemv_silu_and_mul_kernel",),
                                    silu_in_gemv=True)


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_batch_1_decode_with_silu_in_gemv_under_tp2_equals_one_gpu(tiny_ckpt):
    """Each rank's gate_up gemv activates its own features (its gate and up shards), then down_proj
    and the all-reduce: the batch-1 tokens of TP=2 (CUDA graphs on both ranks) are TP=1's."""
    prompts = random_prompts(512, [4, 23], seed=44)
    params = SamplingParams(temperature=0.0, max_tokens=16)
    kw = dict(device="cuda", dtype="float32", gpu_memory_utilization=0.3, max_num_seqs=4, silu_in_gemv=True)
    tokens = {}
    for tp in (1, 2):
        with LLM(tiny_ckpt, tensor_parallel_size=tp, **kw) as llm:
            tokens[tp] = [llm.generate([p], params, use_tqdm=False)[0]["token_ids"] for p in prompts]
        torch.cuda.empty_cache()
    assert tokens[2] == tokens[1]
