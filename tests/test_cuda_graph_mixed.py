"""CUDA graphs for mixed steps (aios/engine/cuda_graph_mixed.py), on the CPU: what a replay runs.

A CPU cannot capture a graph, but `stage` + `forward_static` are exactly what a replay does: the
step copied into the bucket's padded static buffers, the model run over all of them. So each mixed
step of a real generation, run that way, must give the eager step's logits, with the torch
attention references and with the Triton kernels (the tiled prefill) under the interpreter.
"""

import numpy as np
import pytest
import torch

from aios import LLM, SamplingParams
from aios.config import MIXED_GRAPH_TOKENS, default_mixed_graph_tokens
from aios.engine.cuda_graph_mixed import MixedCUDAGraphRunner, mixed_sizes
from aios.engine.upload import upload_step_inputs
from aios.layers.backend import TRITON_ATTENTION, Backend
from helpers import assert_no_leaked_blocks


def test_mixed_sizes_are_powers_of_two_from_16_then_the_limit():
    assert mixed_sizes(0) == []
    assert mixed_sizes(16) == [16]
    assert mixed_sizes(100) == [16, 32, 64, 100]
    assert mixed_sizes(512) == [16, 32, 64, 128, 256, 512]


@pytest.mark.parametrize("value", [-1, 1.5, True, "64"])
def test_cudagraph_mixed_tokens_must_be_an_int_at_least_0(tiny_ckpt, value):
    with pytest.raises(ValueError, match="cudagraph_mixed_tokens must be an int >= 0"):
        LLM(tiny_ckpt, device="cpu", cudagraph_mixed_tokens=value)


def test_cudagraph_mixed_tokens_needs_the_triton_attention_backend(tiny_ckpt):
    with pytest.raises(ValueError, match="needs attention_backend='triton'"):
        LLM(tiny_ckpt, device="cpu", cudagraph_mixed_tokens=64, attention_backend="torch")


def test_cudagraph_mixed_tokens_is_capped_by_the_step_budget(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", cudagraph_mixed_tokens=4096, max_num_batched_tokens=96)
    assert llm.config.cudagraph_mixed_tokens == 96
    assert llm.model_runner.mixed_graphs.sizes == [16, 32, 64, 96]
    assert llm.model_runner.mixed_graphs.graphs == {}       # nothing captured on a CPU: every step eager


@pytest.mark.parametrize("device, backend, enforce_eager, want", [
    ("cuda", "triton", False, MIXED_GRAPH_TOKENS), ("cuda:1", "triton", False, MIXED_GRAPH_TOKENS),
    ("cpu", "triton", False, 0), ("cuda", "triton", True, 0), ("cuda", "torch", False, 0),
    ("cuda", "triton-tma", False, 0)])
def test_the_default_graphs_mixed_steps_wherever_cuda_graphs_run_the_triton_prefill(device, backend,
                                                                                   enforce_eager, want):
    assert default_mixed_graph_tokens(device, backend, enforce_eager) == want


def test_by_default_a_cpu_engine_builds_no_mixed_graph_runner(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu")
    assert llm.config.cudagraph_mixed_tokens == 0
    assert llm.model_runner.mixed_graphs is None


def _check_every_mixed_step(llm: LLM, runner: MixedCUDAGraphRunner) -> list[int]:
    """Wrap the model runner's step: each step a bucket holds also runs staged; compare logits."""
    model_runner = llm.model_runner
    eager_step = model_runner.execute_step
    buckets = []

    def execute_step(inputs, use_cuda_graph=True):
        size = runner.bucket_for(inputs)
        if size is not None and not len(inputs.prompt_logits_indices):
            t = upload_step_inputs(inputs, model_runner.device)
            k = runner.stage(t, inputs, size)
            # K/V stores of the staged run write the values the eager run writes, to the same slots
            staged = runner.forward_static(size)[:k].clone()
            logits, scores = eager_step(inputs, use_cuda_graph)
            torch.testing.assert_close(staged, logits, rtol=1e-4, atol=1e-4)
            buckets.append(size)
            return logits, scores
        return eager_step(inputs, use_cuda_graph)

    model_runner.execute_step = execute_step
    return buckets


def generate_checking_every_mixed_step(ckpt: str, prompt_lens: list[int], max_tokens: int, seed: int,
                                       **kw) -> list[int]:
    """Generate on the CPU at a 40-token step budget (the prompts arrive in chunks beside the decodes
    of those already running), each mixed step also staged into its bucket and compared with the
    eager step (_check_every_mixed_step); return the buckets the steps took."""
    llm = LLM(ckpt, device="cpu", max_num_batched_tokens=40, async_scheduling=False, kvcache_block_size=16, **kw)
    mr = llm.model_runner
    runner = MixedCUDAGraphRunner(mr.model, 40, llm.config.max_num_seqs, mr.max_blocks_per_seq,
                                  llm.config.max_model_len, mr.device)
    runner.allocate()
    buckets = _check_every_mixed_step(llm, runner)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, 100, size=n).tolist() for n in prompt_lens]
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_tokens, ignore_eos=True), use_tqdm=False)
    assert all(len(o["token_ids"]) == max_tokens for o in outs)
    assert_no_leaked_blocks(llm)
    return buckets


@pytest.mark.parametrize("attention", ["torch", "triton"])
def test_each_mixed_step_staged_into_its_bucket_gives_the_eager_logits(tiny_ckpt, attention):
    kw = dict(backend=Backend(attention=TRITON_ATTENTION)) if attention == "triton" else {}
    buckets = generate_checking_every_mixed_step(tiny_ckpt, [5, 23, 37, 2, 14], max_tokens=6, seed=0, **kw)
    assert len(buckets) >= 3 and set(buckets) <= {16, 32, 40}


@pytest.fixture(scope="module", params=["gemma3", "mistral", "qwen3-moe"])
def family_ckpt(request, tmp_path_factory) -> str:
    """Families whose layers differ from Qwen3's where a mixed step's padding could leak: a sliding
    window of 12 (Gemma 3 alternating it with global layers, Mistral in every layer) and experts
    (the padding rows are routed too)."""
    from aios.utils.tiny_checkpoint_qwen3_moe import make_qwen3_moe_checkpoint
    from aios.utils.tiny_sliding_checkpoints import make_gemma3_checkpoint, make_mistral_checkpoint

    make = {"gemma3": make_gemma3_checkpoint, "mistral": make_mistral_checkpoint,
            "qwen3-moe": make_qwen3_moe_checkpoint}[request.param]
    return make(str(tmp_path_factory.mktemp(request.param)))


def test_each_mixed_step_of_other_families_staged_into_its_bucket_gives_the_eager_logits(family_ckpt):
    """The Triton kernels under the interpreter; prompts past the window, chunked beside decodes."""
    buckets = generate_checking_every_mixed_step(family_ckpt, [30, 5, 19], max_tokens=4, seed=1,
                                                 backend=Backend(attention=TRITON_ATTENTION))
    assert len(buckets) >= 2


def test_stage_pads_tokens_sequences_and_tiles_so_nothing_extra_is_read_or_written(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", max_num_batched_tokens=64, async_scheduling=False, kvcache_block_size=16)
    mr = llm.model_runner
    runner = MixedCUDAGraphRunner(mr.model, 64, llm.config.max_num_seqs, mr.max_blocks_per_seq,
                                  llm.config.max_model_len, mr.device)
    runner.allocate()
    seen = []

    def record(inputs, use_cuda_graph=True):
        if inputs.is_prefill and not seen:
            size = runner.bucket_for(inputs)
            runner.stage(upload_step_inputs(inputs, mr.device), inputs, size)
            seen.append((inputs, size, {k: v.clone() for k, v in runner.v.items()}))
        return eager(inputs, use_cuda_graph)

    eager, mr.execute_step = mr.execute_step, record
    llm.generate([[3, 4, 5, 6, 7], [8, 9, 10]], SamplingParams(max_tokens=2), use_tqdm=False)
    inputs, size, v = seen[0]
    n, s, seqs = len(inputs.input_ids), len(inputs.context_lens), runner.num_seqs[size]
    assert size == 16 and (n, s) == (8, 2)
    assert (v["slot_mapping"][n:size] == -1).all() and (v["input_ids"][n:size] == 0).all()
    assert v["cu_seqlens_q"][:seqs + 1].tolist() == [0, 5, 8] + [8] * (seqs - 2)   # padding seqs: 0 tokens
    assert (v["context_lens"][s:seqs] == 0).all()
    tiles = v["q_tiles"][:runner.num_tiles[size]]
    real = tiles[tiles[:, 0] >= 0]
    assert sorted(map(tuple, real.tolist())) == [(0, 0), (1, 0)]           # one 16-row tile per prompt here
    assert (tiles[len(real):, 0] == -1).all()


@pytest.mark.gpu
def test_mixed_graphs_replay_on_the_gpu_and_give_the_eager_greedy_tokens(tiny_ckpt):
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 100, size=n).tolist() for n in (5, 23, 37, 2, 14, 30)]
    params = SamplingParams(max_tokens=12, ignore_eos=True)      # greedy
    # A small share of the card, and each engine closed by `with`: the GPU tests share one process,
    # and an engine left to the garbage collector would hold its KV cache from the tests after it.
    kw = dict(device="cuda", dtype="float32", max_num_batched_tokens=48, kvcache_block_size=16,
              gpu_memory_utilization=0.3)
    with LLM(tiny_ckpt, cudagraph_mixed_tokens=0, **kw) as eager:
        assert eager.model_runner.mixed_graphs is None
        want = [o["token_ids"] for o in eager.generate(prompts, params, use_tqdm=False)]
    replayed = []
    with LLM(tiny_ckpt, **kw) as llm:         # the default: graphs up to 512 tokens, capped to the budget
        runner = llm.model_runner.mixed_graphs
        assert sorted(runner.graphs) == [16, 32, 48]
        replay = runner.replay
        runner.replay = lambda t, inputs, size: replayed.append(size) or replay(t, inputs, size)
        got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
        assert_no_leaked_blocks(llm)
    assert got == want
    assert len(replayed) >= 3


def test_the_server_flag_sets_the_field_and_leaves_the_default_alone():
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from aios.server.__main__ import engine_kwargs, parse_args

    assert engine_kwargs(parse_args(["--cudagraph-mixed-tokens", "256"]))["cudagraph_mixed_tokens"] == 256
    assert "cudagraph_mixed_tokens" not in engine_kwargs(parse_args([]))
