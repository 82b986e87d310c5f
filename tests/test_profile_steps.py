"""benchmark.py --profile's step breakdown (aios/bench/profile_steps.py), on the CPU."""

import numpy as np

from aios import LLM, SamplingParams
from aios.bench.profile_steps import KINDS, profile_engine, step_kind
from aios.engine.cuda_graph_mixed import MixedCUDAGraphRunner


def test_the_profile_counts_every_step_once_as_decode_or_an_eager_mixed_step(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", max_num_batched_tokens=32, kvcache_block_size=16)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 100, size=n).tolist() for n in (20, 9, 30)]
    params = [SamplingParams(max_tokens=5, ignore_eos=True)] * len(prompts)
    out = profile_engine(llm, prompts, params)
    assert sum(out[k]["steps"] for k in KINDS if k in out) == out["steps"] > 0
    assert out["mixed"]["steps"] >= 2 and out["decode"]["steps"] >= 1      # 59 prompt tokens, 32 a step
    assert "mixed_graphed" not in out                                       # a CPU captures no graph
    assert all(out[k]["total"] >= out[k]["execute"] for k in ("decode", "mixed"))
    assert not llm.has_unfinished_requests()


def test_a_step_is_graphed_where_execute_step_would_replay_a_mixed_graph(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", max_num_batched_tokens=64, kvcache_block_size=16)
    mr = llm.model_runner
    seen = []
    eager = mr.execute_step
    mr.execute_step = lambda inputs, use_cuda_graph=True: seen.append(inputs) or eager(inputs, use_cuda_graph)
    llm.generate([[3, 4, 5, 6, 7], [8, 9]], SamplingParams(max_tokens=3), use_tqdm=False)
    prefill, decode = next(x for x in seen if x.is_prefill), next(x for x in seen if not x.is_prefill)
    assert step_kind(mr, decode) == "decode" and step_kind(mr, prefill) == "mixed"   # no mixed runner
    mr.mixed_graphs = MixedCUDAGraphRunner(mr.model, 64, llm.config.max_num_seqs, mr.max_blocks_per_seq,
                                           llm.config.max_model_len, mr.device)
    assert step_kind(mr, prefill) == "mixed"                  # a runner, but nothing captured
    mr.mixed_graphs.graphs = dict.fromkeys(mr.mixed_graphs.sizes)          # as if captured
    assert step_kind(mr, prefill) == "mixed_graphed" and step_kind(mr, decode) == "decode"
    assert step_kind(mr, prefill, use_cuda_graph=False) == "mixed"
