"""Prefix caching inside one step: a prefill chunk's full blocks enter the cache as the scheduler
adds the chunk to the batch, so a request admitted later in the same schedule() hits the blocks that
step is about to fill (vLLM v1 caches blocks at allocation the same way). What must hold: requests
behind one prefix, all submitted at once into a cold cache, compute it once; their greedy tokens
equal HF's and those of the engine with caching off; a chunk caches only the full blocks before its
end; and a step whose launch fails leaves none of the blocks it was to fill in the cache.
"""

import pytest

from aios import LLM, SamplingParams
from helpers import assert_free_list_whole, hf_greedy, random_prompts, run_to_end

VOCAB = 512
PREFIX_LEN = 32
SUFFIX_LENS = [3, 1, 5, 2, 7, 4]
MAX_TOKENS = 5


def make_llm(tiny_ckpt: str, **kwargs) -> LLM:
    return LLM(tiny_ckpt, device="cpu", dtype="float32", **kwargs)


def params(max_tokens: int = MAX_TOKENS) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens)


def generate(llm: LLM, prompts: list[list[int]], max_tokens: int = MAX_TOKENS) -> list[list[int]]:
    return [o["token_ids"] for o in llm.generate(prompts, params(max_tokens), use_tqdm=False)]


@pytest.fixture(scope="module")
def shared_prefix(tiny_ckpt):
    """Six prompts behind one 32-token prefix, HF's greedy tokens and the caching-off engine's."""
    prefix = random_prompts(VOCAB, [PREFIX_LEN], seed=40)[0]
    prompts = [prefix + s for s in random_prompts(VOCAB, SUFFIX_LENS, seed=41)]
    off = make_llm(tiny_ckpt, enable_prefix_caching=False)
    try:
        return prompts, hf_greedy(tiny_ckpt, prompts, MAX_TOKENS), generate(off, prompts)
    finally:
        off.close()


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    """greedy(prompts, max_tokens) of an engine with caching off."""
    llm = make_llm(tiny_ckpt, enable_prefix_caching=False)
    yield lambda prompts, max_tokens: generate(llm, prompts, max_tokens)
    llm.close()


def cached_tokens(prompt: list[int], block_size: int) -> int:
    """What a prompt behind the shared prefix can hit: the prefix's full blocks, never its last token."""
    return min(PREFIX_LEN // block_size, (len(prompt) - 1) // block_size) * block_size


@pytest.mark.parametrize("block_size,budget,async_scheduling", [
    (4, 8192, True), (4, 8192, False),        # one step admits them all
    (4, 12, True), (4, 12, False),            # chunked prefill: the prefix takes three steps
    (1, 8192, True),                          # one token a block
    (16, 20, False),                          # a chunk ends inside the prefix's second block
], ids=lambda v: str(v))
def test_requests_behind_one_prefix_submitted_at_once_compute_it_once(tiny_ckpt, shared_prefix, block_size,
                                                                      budget, async_scheduling):
    prompts, hf, off = shared_prefix
    llm = make_llm(tiny_ckpt, kvcache_block_size=block_size, max_num_batched_tokens=budget,
                   async_scheduling=async_scheduling)
    got = generate(llm, prompts)
    assert got == hf and got == off
    hits = [cached_tokens(p, block_size) for p in prompts[1:]]
    stats = llm.stats()
    assert stats["prefix_cache_hits"] == sum(hits) > 0
    assert stats["num_computed_prompt_tokens"] == sum(map(len, prompts)) - sum(hits), \
        "the shared prefix was computed more than once"
    assert stats["num_preemptions"] == 0
    assert_free_list_whole(llm)
    llm.close()


def test_two_requests_with_one_prefix_in_one_step_compute_it_once(tiny_ckpt, reference):
    # A's chunk fills blocks 0-3 in this step; they enter the cache as A is scheduled, so B, admitted
    # after A in the same schedule(), hits them and computes its one last token (in the same step,
    # after each layer has stored A's K/V).
    prefix = random_prompts(VOCAB, [16], seed=5)[0]
    prompts = [prefix + [7, 8, 9], prefix + [10]]
    want = reference(prompts, 5)
    llm = make_llm(tiny_ckpt, kvcache_block_size=4, async_scheduling=False)
    bm = llm.block_manager
    a, b = (llm.add_request(p, params(5)) for p in prompts)
    batch = llm.scheduler.schedule()
    assert batch.seqs == [a, b] and batch.num_new_tokens == [19, 1]
    assert a.num_cached_tokens == 0 and b.num_cached_tokens == 16
    assert b.block_table[:4] == a.block_table[:4]
    assert [bm.hash_to_block[h] for h in a.block_hashes] == a.block_table[:4]   # before the launch
    assert [bm.blocks[i].ref_count for i in a.block_table[:4]] == [2] * 4
    llm.step(batch)
    assert llm.stats()["num_computed_prompt_tokens"] == 19 + 1
    run_to_end(llm)
    assert [a.output_token_ids, b.output_token_ids] == want
    assert_free_list_whole(llm)


def test_a_request_owed_prompt_logprobs_computes_the_prefix_beside_it_and_its_copy_stays_out(tiny_ckpt,
                                                                                               reference):
    # B skips the lookup (every prompt position's logits are asked for): the same four blocks are
    # computed twice in one step, and only A's enter the cache.
    prefix = random_prompts(VOCAB, [16], seed=5)[0]
    prompts = [prefix + [7, 8, 9], prefix + [10]]
    want = reference(prompts, 5)
    llm = make_llm(tiny_ckpt, kvcache_block_size=4)
    bm = llm.block_manager
    a = llm.add_request(prompts[0], params(5))
    b = llm.add_request(prompts[1], SamplingParams(temperature=0, max_tokens=5, prompt_logprobs=1))
    batch = llm.scheduler.schedule()
    assert batch.num_new_tokens == [19, 17] and b.num_cached_tokens == 0
    assert not set(a.block_table) & set(b.block_table)
    assert a.block_hashes == b.block_hashes[:4]
    assert [bm.hash_to_block[h] for h in a.block_hashes] == a.block_table[:4]
    assert all(bm.blocks[i].hash == -1 for i in b.block_table)        # the duplicate stays out
    llm.step(batch)
    run_to_end(llm)
    assert [a.output_token_ids, b.output_token_ids] == want
    assert len(b.prompt_logprobs) == len(prompts[1])
    assert_free_list_whole(llm)
    # the registered copy still serves the next request; the duplicate was recycled
    c = llm.add_request(prefix + [11, 12], params(2))
    run_to_end(llm)
    assert c.num_cached_tokens == 16


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_a_chunk_ending_inside_a_block_caches_only_the_blocks_before_it_and_a_later_request_hits_them(
        tiny_ckpt, reference, async_scheduling):
    # Budget 14, blocks of 4, one 24-token prompt twice. Step 1: A computes tokens 0..13; blocks 0-2
    # enter the cache as the chunk is scheduled, block 3 (half written) does not. Step 2: A's chunk
    # 14..23 completes blocks 3-5; B arrives and is admitted in the same schedule(): it hits blocks
    # 0-4 (its last token is always computed), two of which A's chunk is writing in this very step.
    prompt = random_prompts(VOCAB, [24], seed=6)[0]
    want = reference([prompt, prompt], 4)
    llm = make_llm(tiny_ckpt, kvcache_block_size=4, max_num_batched_tokens=14, async_scheduling=async_scheduling)
    bm = llm.block_manager
    a = llm.add_request(prompt, params(4))
    batch = llm.scheduler.schedule()
    assert batch.num_new_tokens == [14]
    assert sorted(bm.hash_to_block.values()) == sorted(a.block_table[:3]) and len(a.block_hashes) == 3
    llm.step(batch)
    b = llm.add_request(prompt, params(4))
    batch = llm.scheduler.schedule()
    assert batch.seqs == [a, b] and batch.num_new_tokens == [10, 4]
    assert b.num_cached_tokens == 20 and b.block_table[:5] == a.block_table[:5]
    assert sorted(bm.hash_to_block.values()) == sorted(a.block_table[:6])
    llm.step(batch)
    run_to_end(llm)
    assert [a.output_token_ids, b.output_token_ids] == want
    assert llm.stats()["num_computed_prompt_tokens"] == 24 + 4
    assert_free_list_whole(llm)


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_a_request_of_n_samples_and_one_behind_its_prefix_in_the_same_step_share_it(tiny_ckpt, shared_prefix,
                                                                                   async_scheduling):
    # the parent of n=3 caches its prompt's full blocks as it is scheduled; the one-sample request
    # admitted after it hits them; the fork at the launch then adds the two other samples' references
    prompts, _, off = shared_prefix
    llm = make_llm(tiny_ckpt, kvcache_block_size=4, async_scheduling=async_scheduling)
    parent = llm.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=3))
    other = llm.add_request(prompts[1], params())
    batch = llm.scheduler.schedule()
    assert batch.seqs == [parent, other] and other.num_cached_tokens == PREFIX_LEN
    llm.step(batch)
    shared = other.block_table[:PREFIX_LEN // 4]
    assert all(llm.block_manager.blocks[b].ref_count == 4 for b in shared)    # 3 samples + other
    run_to_end(llm)
    assert [s.output_token_ids for s in parent.group.seqs] == [off[0]] * 3
    assert other.output_token_ids == off[1]
    assert llm.stats()["num_computed_prompt_tokens"] == len(prompts[0]) + len(prompts[1]) - PREFIX_LEN
    assert_free_list_whole(llm)
    llm.close()


@pytest.mark.parametrize("failing_call", [1, 3], ids=["first-step", "third-step"])
@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_a_failed_launch_leaves_none_of_its_blocks_in_the_cache(tiny_ckpt, shared_prefix, async_scheduling,
                                                               failing_call):
    # Budget 12, blocks of 4: each of the first three steps schedules a chunk of the prefix and
    # caches its blocks before the launch. The launch that raises must take its blocks out again:
    # a later hit on them would read K/V that was never written.
    prompts, hf, _ = shared_prefix
    llm = make_llm(tiny_ckpt, kvcache_block_size=4, max_num_batched_tokens=12, async_scheduling=async_scheduling)
    bm = llm.block_manager
    other = random_prompts(VOCAB, [13], seed=42)[0]
    want_other = generate(llm, [other])
    before = dict(bm.hash_to_block)                       # other's blocks, written
    assert before
    run, calls = llm.model_runner.run, [0]

    def failing_run(batch, *args, **kwargs):
        calls[0] += 1
        if calls[0] == failing_call:
            raise RuntimeError("injected launch failure")
        return run(batch, *args, **kwargs)

    llm.model_runner.run = failing_run
    with pytest.raises(RuntimeError, match="injected"):
        generate(llm, prompts)
    # every launched chunk of the prefix (12 tokens a step) keeps its blocks; the failed one's are out
    assert len(bm.hash_to_block) == len(before) + 3 * (failing_call - 1)
    assert before.items() <= bm.hash_to_block.items()
    cached = set(bm.hash_to_block.values())
    assert all(b.hash == -1 for b in bm.blocks if b.block_id not in cached)
    assert_free_list_whole(llm)
    llm.model_runner.run = run
    before = llm.stats()["num_computed_prompt_tokens"]
    assert generate(llm, prompts) == hf
    hits = 12 * (failing_call - 1)                        # the first request hits what was launched
    assert llm.stats()["num_computed_prompt_tokens"] - before == \
        sum(map(len, prompts)) - hits - sum(cached_tokens(p, 4) for p in prompts[1:])
    assert generate(llm, [other]) == want_other
    assert_free_list_whole(llm)
    llm.close()


@pytest.mark.gpu
@pytest.mark.parametrize("block_size,budget,async_scheduling", [
    (16, 8192, True), (16, 8192, False), (16, 20, True), (4, 12, True),
], ids=lambda v: str(v))
def test_gpu_requests_behind_one_prefix_compute_it_once_with_the_triton_kernels(tiny_ckpt, shared_prefix, block_size,
                                                                                budget, async_scheduling):
    # the Triton prefill kernel (and the fused q/k-norm + RoPE + K/V store) read blocks that the
    # same step's store wrote: the tokens must still be HF's
    prompts, hf, _ = shared_prefix
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kvcache_block_size=block_size, num_kvcache_blocks=64,
              max_model_len=512, max_num_batched_tokens=budget, async_scheduling=async_scheduling)
    assert generate(llm, prompts) == hf
    hits = [cached_tokens(p, block_size) for p in prompts[1:]]
    assert llm.stats()["num_computed_prompt_tokens"] == sum(map(len, prompts)) - sum(hits)
    assert_free_list_whole(llm)
    llm.close()
