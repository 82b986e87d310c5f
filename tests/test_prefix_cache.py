"""Prefix caching through the real engine: each failure mode nano-vllm and mini-sglang have hit,
as a regression test. The oracle is the same engine with caching off and ample memory: greedy
tokens must be equal, and the block manager's state must say that the cache really was used.
"""

import pytest

from aios import LLM, SamplingParams
from helpers import assert_free_list_whole, random_prompts, run_to_end

VOCAB = 512


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    """greedy(prompts, max_tokens) of an engine with caching off and memory to spare."""
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", enable_prefix_caching=False)

    def run(prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        return generate(llm, prompts, max_tokens)
    return run


def make_llm(tiny_ckpt: str, **kwargs) -> LLM:
    return LLM(tiny_ckpt, device="cpu", dtype="float32", **kwargs)


def params(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)


def generate(llm: LLM, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    return [o["token_ids"] for o in llm.generate(prompts, params(max_tokens), use_tqdm=False)]


def count_computed_tokens(llm: LLM) -> list[int]:
    """Wrap the runner: the returned list gets the number of tokens computed by each step."""
    counts: list[int] = []
    run = llm.model_runner.run

    def counting_run(batch, *args, **kwargs):
        counts.append(batch.num_tokens)
        return run(batch, *args, **kwargs)
    llm.model_runner.run = counting_run
    return counts


@pytest.mark.parametrize("prompt_len", [4, 12, 13, 3], ids=lambda n: f"len{n}")
def test_a_fully_cached_prompt_computes_only_its_last_token(tiny_ckpt, reference, prompt_len):
    # 4 and 12: an exact multiple of the block size (the last block is recomputed, not hit);
    # 13: every full block hits; 3: shorter than a block, nothing to hit.
    block_size, max_tokens = 4, 6
    prompt = random_prompts(VOCAB, [prompt_len], seed=prompt_len)[0]
    want = reference([prompt], max_tokens)
    llm = make_llm(tiny_ckpt, kvcache_block_size=block_size)
    assert generate(llm, [prompt], max_tokens) == want
    counts = count_computed_tokens(llm)
    seq = llm.add_request(prompt, params(max_tokens))
    run_to_end(llm)
    cached = (prompt_len - 1) // block_size * block_size
    assert seq.num_cached_tokens == cached
    assert counts[0] == prompt_len - cached >= 1
    assert sum(counts) == prompt_len - cached + max_tokens - 1
    assert seq.output_token_ids == want[0]
    assert_free_list_whole(llm)


def test_a_preempted_sequence_re_hits_its_own_blocks(tiny_ckpt, reference):
    # 16 blocks of 4; each sequence grows to 44 tokens = 11 blocks: both cannot run to the end.
    prompts = random_prompts(VOCAB, [20, 20], seed=3)
    max_tokens = 24
    want = reference(prompts, max_tokens)
    llm = make_llm(tiny_ckpt, kvcache_block_size=4, num_kvcache_blocks=16)
    seqs = [llm.add_request(p, params(max_tokens)) for p in prompts]
    admissions = []                                # (seq_id, num_cached_tokens) of each admission
    for _ in range(10000):
        if not llm.has_unfinished_requests():
            break
        waiting = set(map(id, llm.scheduler.waiting))
        batch = llm.scheduler.schedule()
        admissions.extend((s.seq_id, s.num_cached_tokens) for s in batch.seqs if id(s) in waiting)
        llm.step(batch)
    assert [s.output_token_ids for s in seqs] == want
    victim = seqs[1]
    assert victim.num_preemptions >= 1 and llm.stats()["num_preemptions"] >= 1
    readmissions = [cached for seq_id, cached in admissions if seq_id == victim.seq_id][1:]
    assert readmissions and readmissions[0] >= 16, "the preempted sequence recomputed its prompt"
    assert llm.stats()["prefix_cache_hits"] >= readmissions[0]   # the prompts share nothing else
    assert_free_list_whole(llm)


@pytest.mark.parametrize("block_size,budget", [(4, 6), (4, 8), (4, 4), (16, 16), (16, 7), (1, 3)],
                         ids=lambda v: str(v))
def test_chunked_prefill_with_prefix_hits_matches_at_every_chunk_to_block_alignment(tiny_ckpt, reference,
                                                                                    block_size, budget):
    # (4, 8), (4, 4), (16, 16): chunks end on block edges; the others end inside blocks.
    system = random_prompts(VOCAB, [21], seed=7)[0]
    suffixes = random_prompts(VOCAB, [3, 9, 1, 14, 5], seed=8)
    prompts = [system + s for s in suffixes] + [system[:9], system + suffixes[1]]
    max_tokens = 5
    want = reference(prompts, max_tokens)
    llm = make_llm(tiny_ckpt, kvcache_block_size=block_size, max_num_batched_tokens=budget)
    seqs = [llm.add_request(prompts[0], params(max_tokens))]
    for p in prompts[1:]:                          # arrivals while earlier prompts are mid-prefill
        for _ in range(3):
            llm.step()
        seqs.append(llm.add_request(p, params(max_tokens)))
    run_to_end(llm)
    assert [s.output_token_ids for s in seqs] == want
    assert llm.stats()["prefix_cache_hits"] > 0
    assert_free_list_whole(llm)


def test_counters_move_as_blocks_are_used_and_prefixes_hit(tiny_ckpt):
    llm = make_llm(tiny_ckpt, kvcache_block_size=4)
    total = llm.block_manager.num_blocks
    s = llm.stats()
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"], s["prefix_cache_hit_rate"]) == (0, 0, 0.0)
    assert (s["kv_blocks_used"], s["kv_blocks_free"], s["kv_blocks_total"]) == (0, total, total)
    prompt = random_prompts(VOCAB, [13], seed=9)[0]
    llm.add_request(prompt, params(3))
    llm.step()
    s = llm.stats()
    assert s["kv_blocks_used"] == 4 and s["kv_blocks_used"] + s["kv_blocks_free"] == total
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (12, 0)
    run_to_end(llm)
    assert llm.stats()["kv_blocks_used"] == 0
    generate(llm, [prompt], 3)
    s = llm.stats()
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"], s["prefix_cache_hit_rate"]) == (24, 12, 0.5)
    assert s["num_preemptions"] == 0 and s["kv_blocks_used"] == 0


def test_prefix_caching_cuts_the_prefill_tokens_computed(tiny_ckpt, reference):
    system = random_prompts(VOCAB, [32], seed=10)[0]
    prompts = [system + q for q in random_prompts(VOCAB, [5, 6, 7, 8], seed=11)]
    want = reference(prompts, 4)
    computed = {}
    for caching in (False, True):
        llm = make_llm(tiny_ckpt, kvcache_block_size=4, enable_prefix_caching=caching)
        counts = count_computed_tokens(llm)
        out = generate(llm, prompts[:1], 4) + generate(llm, prompts[1:], 4)
        assert out == want
        computed[caching] = sum(counts)
    assert computed[False] == sum(map(len, prompts)) + 4 * 3
    assert computed[True] == computed[False] - 3 * len(system)        # 3 later prompts hit 8 blocks
