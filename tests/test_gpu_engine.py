"""On a CUDA GPU: the Triton path and CUDA graphs give HuggingFace's greedy tokens."""

import contextlib
import gc
from collections.abc import Iterator

import pytest
import torch
import triton
import triton.language as tl

from aios import LLM, SamplingParams
from helpers import assert_no_leaked_blocks, greedy, hf_greedy, random_prompts

pytestmark = pytest.mark.gpu

PROMPT_LENS = [3, 9, 30, 50, 70, 17, 120]


@pytest.mark.parametrize("block_size", [16, 64, 256])
def test_gpu_greedy_equals_hf_in_fp32(tiny_ckpt, block_size):
    prompts = random_prompts(512, PROMPT_LENS, seed=21)
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kvcache_block_size=block_size, num_kvcache_blocks=64,
              max_model_len=512)
    assert greedy(llm, prompts, 24) == hf_greedy(tiny_ckpt, prompts, 24)
    assert_no_leaked_blocks(llm)


def test_gpu_chunked_prefill_and_preemption_equal_hf(tiny_ckpt):
    prompts = random_prompts(512, PROMPT_LENS, seed=22)
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=12,
              max_num_batched_tokens=24, max_model_len=512)
    assert greedy(llm, prompts, 24) == hf_greedy(tiny_ckpt, prompts, 24)
    assert llm.stats()["num_preemptions"] > 0
    assert_no_leaked_blocks(llm)


def test_cuda_graph_output_equals_eager_output_in_fp32(tiny_ckpt):
    prompts = random_prompts(512, [5, 40, 100, 7, 64, 33, 18, 90, 3], seed=23)
    kw = dict(device="cuda", dtype="float32", kvcache_block_size=16, max_model_len=512, num_kvcache_blocks=256)
    graphs = LLM(tiny_ckpt, **kw)
    assert graphs.model_runner.cuda_graphs.graphs, "no CUDA graphs were captured"
    eager = LLM(tiny_ckpt, enforce_eager=True, **kw)
    assert greedy(graphs, prompts, 32) == greedy(eager, prompts, 32)


def test_cuda_graph_logits_match_eager_logits_in_bf16(tiny_ckpt):
    """bf16 greedy tokens can differ after a near-tie (cuBLAS picks other kernels for the padded graph
    batch), so compare one decode step's logits on identical inputs instead."""
    llm = LLM(tiny_ckpt, device="cuda", dtype="bfloat16", kvcache_block_size=16, max_model_len=512,
              num_kvcache_blocks=256)
    for p in random_prompts(512, [5, 40, 100, 7, 64, 33, 18, 90, 3], seed=24):
        llm.add_request(p, SamplingParams(temperature=0, max_tokens=8))
    while not all(s.is_decode for s in llm.scheduler.running) or llm.scheduler.waiting:
        llm.step()
    batch = llm.scheduler.schedule()
    assert all(n == 1 for n in batch.num_new_tokens) and len(batch) == 9
    runner = llm.model_runner
    inputs = runner.prepare_inputs(batch)
    assert runner.cuda_graphs.batch_size_for(inputs) == 16
    graph_logits = runner.execute(inputs).float().clone()
    eager_logits = runner.execute(inputs, use_cuda_graph=False).float()
    assert (graph_logits - eager_logits).abs().max().item() < 0.05 * eager_logits.abs().max().item()
    for seq in list(llm.seqs.values()):
        llm.abort_request(seq.seq_id)


def test_seeded_sampling_is_the_same_on_gpu_alone_and_batched(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", max_model_len=512, num_kvcache_blocks=128)
    p = random_prompts(512, [7], seed=1)[0]
    params = SamplingParams(temperature=1.0, top_k=50, max_tokens=16, seed=7, ignore_eos=True)
    alone = llm.generate([p], params, use_tqdm=False)[0]["token_ids"]
    others = random_prompts(512, [30, 4], seed=2)
    batch = llm.generate([others[0], p, others[1]], [SamplingParams(temperature=0.7, max_tokens=16), params,
                                                      SamplingParams(temperature=0.7, max_tokens=16)],
                         use_tqdm=False)
    assert batch[1]["token_ids"] == alone


def test_kv_cache_is_sized_from_free_memory(tiny_ckpt):
    gc.collect()
    torch.cuda.empty_cache()
    llm = LLM(tiny_ckpt, device="cuda", dtype="bfloat16", gpu_memory_utilization=0.3, max_model_len=1024)
    free, total = torch.cuda.mem_get_info()
    used_by_cache = llm.model_runner.kv_cache.nbytes
    assert used_by_cache > 0.1 * total
    assert torch.cuda.memory_allocated() < 0.35 * total


def test_close_frees_the_gpu_for_the_next_engine_in_the_process(tiny_ckpt):
    # Each engine sizes its KV cache from the memory left free (gpu_memory_utilization): the
    # second one only gets a full cache if close() really gave the first one's memory back.
    first = LLM(tiny_ckpt, device="cuda", gpu_memory_utilization=0.5)
    blocks = first.stats()["kv_blocks_total"]
    first.generate(random_prompts(512, [9], seed=1), SamplingParams(max_tokens=4), use_tqdm=False)
    first.close()
    second = LLM(tiny_ckpt, device="cuda", gpu_memory_utilization=0.5)
    assert second.stats()["kv_blocks_total"] >= 0.95 * blocks
    assert greedy(second, random_prompts(512, [9], seed=1), 4)
    second.close()


@contextlib.contextmanager
def triton_compiles() -> Iterator[list[str]]:
    """The Triton kernel specializations first met inside the block (compiled, or loaded from the
    disk cache: either way a cost a request would pay), from Triton's jit_cache_hook."""
    from triton import knobs

    seen: list[str] = []

    def hook(*, repr: str, **_) -> bool:
        seen.append(repr)
        return False                                          # False: go on and compile it

    previous, knobs.runtime.jit_cache_hook = knobs.runtime.jit_cache_hook, hook
    try:
        yield seen
    finally:
        knobs.runtime.jit_cache_hook = previous


@triton.jit
def _probe_kernel(x_ptr):
    tl.store(x_ptr, tl.load(x_ptr) + 1)


def test_requests_after_start_up_compile_no_triton_kernel(tiny_ckpt):
    """warm_up and the graph capture specialize every Triton kernel a request meets (batch sizes,
    prompt lengths, greedy and sampled rows), so no request pays a compile in its time to first token."""
    llm = LLM(tiny_ckpt, device="cuda", dtype="bfloat16", max_model_len=1024)
    with triton_compiles() as probe:                          # a kernel this process has not met yet
        _probe_kernel[(1,)](torch.zeros(1, device="cuda"))
    assert probe, "jit_cache_hook saw no compile: the check below would prove nothing"
    prompts = random_prompts(512, [1, 2, 3, 9, 16, 17, 33, 64, 100, 127, 250, 300, 511, 5, 40, 7], seed=25)
    with triton_compiles() as later:
        for params in (SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
                       SamplingParams(temperature=0.8, top_p=0.9, top_k=20, min_p=0.05, max_tokens=20,
                                      ignore_eos=True),
                       SamplingParams(temperature=1.0, seed=3, max_tokens=20, ignore_eos=True)):
            for batch in (prompts, prompts[:1], prompts[4:7]):
                llm.generate(batch, params, use_tqdm=False)
    assert not later, "met after start-up:\n" + "\n".join(later)
    assert_no_leaked_blocks(llm)
    llm.close()
