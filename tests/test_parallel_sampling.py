"""n samples of one prompt (parallel sampling): one prefill, shared KV blocks, copy-on-write.

A request with n > 1 is a SequenceGroup: its parent prefills, the step that samples its first token
samples n rows from that one logits row and forks the other samples, which share every prompt block
(ref counts). The last, partly filled prompt block is copied before a sample writes into it. What
must hold: each sample is exactly what a one-sample request would give (HF's greedy tokens; seed + j
for sample j), the prompt is computed once, no block leaks, the invariants hold after every step.
"""

import dataclasses
import random

import pytest
import torch

from aios import LLM, SamplingParams
from aios.engine.block_manager import BlockManager
from aios.engine.kv_cache import KVCache
from aios.engine.sequence import Sequence
from helpers import assert_no_leaked_blocks, hf_greedy, random_prompts

BLOCK_SIZE = 16
PROMPT_LENS = [21, 9, 32]        # 21 and 9 end inside a block (copy-on-write); 32 ends on a block edge
MAX_TOKENS = 12
KW = dict(device="cpu", dtype="float32", kvcache_block_size=BLOCK_SIZE, max_model_len=256)


@pytest.fixture(scope="module")
def expected(tiny_ckpt):
    prompts = random_prompts(512, PROMPT_LENS, seed=31)
    return prompts, hf_greedy(tiny_ckpt, prompts, MAX_TOKENS)


def run_checked(llm: LLM, prompts, params) -> tuple[list[Sequence], list]:
    """generate() one step at a time, the scheduler's invariants checked after every step; returns
    the parents and every batch the scheduler made."""
    parents = [llm.add_request(p, params) for p in prompts]
    batches = []
    while llm.has_unfinished_requests():
        batch = llm.scheduler.schedule()
        batches.append(batch)
        llm.step(batch)
        llm.scheduler.check_invariants()
    return parents, batches


def samples(parent: Sequence) -> list[Sequence]:
    return parent.group.seqs if parent.group is not None else [parent]


# ---- the block manager alone ------------------------------------------------------------------

def test_fork_shares_every_block_and_copy_on_write_takes_one_reference_off():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    parent = Sequence(0, list(range(10)), SamplingParams(), 4)      # 3 blocks, the last holds 2 tokens
    assert bm.allocate(parent, 10) == 10
    parent.num_computed_tokens = 10
    children = [Sequence(i, list(range(10)), SamplingParams(), 4) for i in (1, 2)]
    for child in children:
        child.num_computed_tokens = 10
        bm.fork(parent, child)
        assert child.block_table == parent.block_table
    assert [bm.blocks[b].ref_count for b in parent.block_table] == [3, 3, 3]
    assert bm.num_used_blocks == 3

    # the first sample to write its next token into the shared last block gets a copy of it
    assert bm.needs_copy_on_write(children[0])
    src, dst = bm.copy_on_write(children[0])
    assert src == parent.block_table[2] and children[0].block_table == parent.block_table[:2] + [dst]
    assert bm.blocks[src].ref_count == 2 and bm.blocks[dst].ref_count == 1
    assert bm.needs_copy_on_write(children[1])
    bm.copy_on_write(children[1])
    assert bm.blocks[src].ref_count == 1 and not bm.needs_copy_on_write(parent)   # the last writes in place
    assert [bm.blocks[b].ref_count for b in parent.block_table[:2]] == [3, 3]     # full blocks stay shared

    for seq in [parent, *children]:
        bm.free(seq)
    assert bm.num_used_blocks == 0 and all(b.ref_count == 0 for b in bm.blocks)


def test_a_fork_at_a_block_edge_copies_nothing():
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    parent, child = (Sequence(i, list(range(8)), SamplingParams(), 4) for i in (0, 1))
    bm.allocate(parent, 8)
    parent.num_computed_tokens = child.num_computed_tokens = 8
    bm.fork(parent, child)
    assert not bm.needs_copy_on_write(child)     # its next token starts a block of its own
    assert bm.allocate(child, 1) == 1 and bm.blocks[child.block_table[-1]].ref_count == 1


def test_copy_blocks_copies_every_layers_k_and_v():
    class Layer:
        num_kv_heads, head_dim = 2, 3
    cache = KVCache([Layer(), Layer()], block_size=4, dtype=torch.float32, device=torch.device("cpu"))
    cache.allocate(5)
    cache.tensor.copy_(torch.randn_like(cache.tensor))
    before = cache.tensor.clone()
    cache.copy_blocks(torch.tensor([1, 3]), torch.tensor([4, 0]))
    assert torch.equal(cache.tensor[:, :, 4], before[:, :, 1]) and torch.equal(cache.tensor[:, :, 0], before[:, :, 3])
    assert torch.equal(cache.tensor[:, :, 1:4], before[:, :, 1:4])


# ---- the engine -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(async_scheduling=False),
    dict(enable_prefix_caching=False),
    dict(max_num_batched_tokens=7),                      # chunked prefill: the fork comes at the last chunk
    dict(num_kvcache_blocks=6),                          # tiny pool: samples are preempted and recomputed
    dict(num_kvcache_blocks=6, async_scheduling=False, enable_prefix_caching=False),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_n_greedy_samples_each_equal_hf_and_share_one_prefill(tiny_ckpt, expected, kwargs):
    prompts, want = expected
    llm = LLM(tiny_ckpt, **KW, **kwargs)
    parents, batches = run_checked(llm, prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=4))
    for parent, w in zip(parents, want):
        assert [s.output_token_ids for s in samples(parent)] == [w] * 4
    stats = llm.stats()
    assert stats["num_forked_seqs"] == 3 * len(prompts)
    if stats["num_preemptions"] == 0:
        # each prompt computed once (not 4 times); prefix hits inside the run only lower it
        assert stats["num_computed_prompt_tokens"] <= sum(PROMPT_LENS)
    else:
        assert "num_kvcache_blocks" in kwargs
    # copy-on-write: one copy per sample but the last of each prompt ending inside a block
    copies = [pair for b in batches for pair in b.blocks_to_copy]
    if stats["num_preemptions"] == 0:
        assert len(copies) == 3 * sum(n % BLOCK_SIZE != 0 for n in PROMPT_LENS)
    assert_no_leaked_blocks(llm)


def test_the_prompt_is_computed_once_for_n_samples_and_n_times_for_n_requests(tiny_ckpt, expected):
    prompts, _ = expected
    llm = LLM(tiny_ckpt, **KW, enable_prefix_caching=False)
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=4, n=4), use_tqdm=False)
    assert llm.stats()["num_computed_prompt_tokens"] == sum(PROMPT_LENS)
    llm.generate([p for p in prompts for _ in range(4)], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
    assert llm.stats()["num_computed_prompt_tokens"] == sum(PROMPT_LENS) + 4 * sum(PROMPT_LENS)


def test_preempting_a_sample_frees_only_its_references(tiny_ckpt, expected):
    prompts, want = expected
    llm = LLM(tiny_ckpt, **KW, num_kvcache_blocks=4)
    parents, _ = run_checked(llm, prompts[:1], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=4))
    assert llm.stats()["num_preemptions"] > 0
    assert [s.output_token_ids for s in samples(parents[0])] == [want[0]] * 4
    assert_no_leaked_blocks(llm)


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_seeded_sample_j_is_the_one_sample_request_with_seed_plus_j(tiny_ckpt, expected, async_scheduling):
    prompts, _ = expected
    llm = LLM(tiny_ckpt, **KW, async_scheduling=async_scheduling)
    params = SamplingParams(temperature=1.0, top_k=50, max_tokens=MAX_TOKENS, n=3, seed=7, ignore_eos=True)
    outs = llm.generate(prompts, params, use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        assert [o["index"] for o in out["outputs"]] == [0, 1, 2]
        for j, o in enumerate(out["outputs"]):
            alone = llm.generate(prompt, SamplingParams(temperature=1.0, top_k=50, max_tokens=MAX_TOKENS, seed=7 + j,
                                                        ignore_eos=True), use_tqdm=False)[0]
            assert o["token_ids"] == alone["token_ids"]
        assert len({tuple(o["token_ids"]) for o in out["outputs"]}) == 3
    assert_no_leaked_blocks(llm)


def test_max_tokens_1_forks_and_finishes_every_sample_at_once(tiny_ckpt, expected):
    prompts, want = expected
    llm = LLM(tiny_ckpt, **KW)
    out = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=1, n=3), use_tqdm=False)
    assert [[o["token_ids"] for o in r["outputs"]] for r in out] == [[w[:1]] * 3 for w in want]
    assert_no_leaked_blocks(llm)


@pytest.mark.parametrize("steps_before_abort", [1, 4])      # 1: before the fork (chunked prefill); 4: after
def test_aborting_the_request_aborts_every_sample(tiny_ckpt, expected, steps_before_abort):
    prompts, want = expected
    llm = LLM(tiny_ckpt, **KW, max_num_batched_tokens=8)
    parent = llm.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=4))
    for _ in range(steps_before_abort):
        llm.step()
        llm.scheduler.check_invariants()
    assert parent.group.forked == (steps_before_abort > 1)
    llm.abort_request(parent.seq_id)
    while llm.has_unfinished_requests():
        llm.step()
    for s in parent.group.seqs:
        assert s.finish_reason == "abort" and s.output_token_ids == want[0][: len(s.output_token_ids)]
    assert not llm.seqs
    assert_no_leaked_blocks(llm)


def test_a_fork_counts_its_samples_against_max_num_seqs(tiny_ckpt, expected):
    prompts, want = expected
    llm = LLM(tiny_ckpt, **KW, max_num_seqs=4)
    parents, batches = run_checked(llm, prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=3))
    assert all(b.num_rows <= 4 and len(b.sampled_seqs) <= 4 for b in batches)
    assert [[s.output_token_ids for s in samples(p)] for p in parents] == [[w] * 3 for w in want]
    with pytest.raises(ValueError, match="^n must be at most max_num_seqs=4, got 5"):
        llm.add_request(prompts[0], SamplingParams(n=5))
    assert_no_leaked_blocks(llm)


def test_best_of_returns_the_n_samples_with_the_highest_cumulative_logprob(tiny_ckpt, expected):
    prompts, _ = expected
    llm = LLM(tiny_ckpt, **KW, enable_prefix_caching=False)
    kw = dict(temperature=1.0, max_tokens=8, ignore_eos=True)
    outs = llm.generate(prompts, SamplingParams(n=2, best_of=4, seed=3, **kw), use_tqdm=False)
    assert llm.stats()["num_computed_prompt_tokens"] == sum(PROMPT_LENS)     # 4 samples, one prefill each prompt
    for prompt, out in zip(prompts, outs):
        # sample j of best_of is the one-sample request with seed 3 + j; its score is its cumulative logprob
        alone = [llm.generate(prompt, SamplingParams(seed=3 + j, logprobs=0, **kw), use_tqdm=False)[0]
                 for j in range(4)]
        best = sorted(alone, key=lambda o: o["cumulative_logprob"], reverse=True)[:2]
        assert [o["index"] for o in out["outputs"]] == [0, 1]
        assert [o["token_ids"] for o in out["outputs"]] == [o["token_ids"] for o in best]
        assert [o["cumulative_logprob"] for o in out["outputs"]] == pytest.approx(
            [o["cumulative_logprob"] for o in best], abs=1e-5)
        assert out["outputs"][0]["cumulative_logprob"] >= out["outputs"][1]["cumulative_logprob"]
        assert out["logprobs"] is None                  # scored for the ranking, not asked for
    assert_no_leaked_blocks(llm)


def test_samples_share_the_prompt_logprobs_of_their_one_prefill(tiny_ckpt, expected):
    prompts, _ = expected
    llm = LLM(tiny_ckpt, **KW)
    params = SamplingParams(temperature=1.0, seed=1, max_tokens=4, prompt_logprobs=2, logprobs=1)
    out = llm.generate(prompts[0], dataclasses.replace(params, n=3), use_tqdm=False)[0]
    alone = llm.generate(prompts[0], params, use_tqdm=False)[0]
    assert len(alone["prompt_logprobs"]) == PROMPT_LENS[0]
    for o in out["outputs"]:
        assert o["prompt_logprobs"] == alone["prompt_logprobs"] and len(o["logprobs"]) == 4
    # sample 0 is the one-sample request (its scores equal up to the rounding of a batch of 3 vs 1)
    got, want = out["outputs"][0]["logprobs"], alone["logprobs"]
    assert [list(d) for d in got] == [list(d) for d in want]
    assert [x.logprob for d in got for x in d.values()] == pytest.approx(
        [x.logprob for d in want for x in d.values()], abs=1e-4)
    assert_no_leaked_blocks(llm)


def test_stream_refuses_more_than_one_sample(tiny_ckpt, expected):
    llm = LLM(tiny_ckpt, **KW)
    with pytest.raises(ValueError, match="^n and best_of must be 1 in stream"):
        next(llm.stream(expected[0][0], SamplingParams(n=2)))
    assert not llm.has_unfinished_requests()


def test_random_arrivals_of_n_requests_keep_tokens_and_blocks_exact(tiny_ckpt):
    """Random n, arrivals, aborts and a small pool; ref counts checked after every step."""
    rng = random.Random(5)
    prompts = random_prompts(512, [rng.randint(1, 40) for _ in range(10)], seed=32)
    max_tokens = [rng.randint(1, 10) for _ in prompts]
    want = hf_greedy(tiny_ckpt, prompts, max(max_tokens))
    llm = LLM(tiny_ckpt, **{**KW, "kvcache_block_size": 4}, num_kvcache_blocks=24, max_num_batched_tokens=16,
              max_num_seqs=8)
    pending, parents, aborted = list(range(len(prompts))), {}, set()
    while pending or llm.has_unfinished_requests():
        if pending and (rng.random() < 0.3 or not llm.has_unfinished_requests()):
            i = pending.pop(0)
            parents[i] = llm.add_request(prompts[i], SamplingParams(temperature=0, max_tokens=max_tokens[i],
                                                                    n=rng.choice([1, 2, 3])))
        live = [i for i, p in parents.items() if not all(s.is_finished for s in samples(p))]
        if live and rng.random() < 0.03:
            i = rng.choice(live)
            llm.abort_request(parents[i].seq_id)
            aborted.add(i)
        llm.step()
        llm.scheduler.check_invariants()
    for i, parent in parents.items():
        for s in samples(parent):
            got = s.output_token_ids
            assert got == (want[i][: len(got)] if i in aborted else want[i][: max_tokens[i]])
    assert llm.stats()["num_preemptions"] > 0 and llm.stats()["num_forked_seqs"] > 0
    assert_no_leaked_blocks(llm)


@pytest.mark.slow
def test_tp2_workers_copy_their_shard_of_a_forked_block(tiny_ckpt, expected):
    """Each rank holds its heads' K/V: copy-on-write must copy on every rank (StepInputs.blocks_to_copy)."""
    prompts, want = expected
    with LLM(tiny_ckpt, **KW, tensor_parallel_size=2) as llm:
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=3), use_tqdm=False)
        assert [[o["token_ids"] for o in r["outputs"]] for r in outs] == [[w] * 3 for w in want]
        assert llm.stats()["num_forked_seqs"] == 2 * len(prompts)
        assert_no_leaked_blocks(llm)


# ---- on a GPU (the lead runs these) -----------------------------------------------------------

@pytest.mark.gpu
def test_gpu_copy_blocks_copies_every_layers_k_and_v():
    class Layer:
        num_kv_heads, head_dim = 4, 64
    cache = KVCache([Layer()] * 3, block_size=16, dtype=torch.bfloat16, device=torch.device("cuda"))
    cache.allocate(8)
    cache.tensor.copy_(torch.randn_like(cache.tensor))
    before = cache.tensor.clone()
    cache.copy_blocks(torch.tensor([2, 5], device="cuda"), torch.tensor([7, 1], device="cuda"))
    assert torch.equal(cache.tensor[:, :, 7], before[:, :, 2]) and torch.equal(cache.tensor[:, :, 1], before[:, :, 5])


@pytest.mark.gpu
@pytest.mark.parametrize("async_scheduling", [True, False])
def test_gpu_n_greedy_samples_equal_hf_with_cuda_graphs(tiny_ckpt, async_scheduling):
    prompts = random_prompts(512, [21, 9, 32, 70], seed=33)
    want = hf_greedy(tiny_ckpt, prompts, 24)
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=64,
              max_model_len=512, async_scheduling=async_scheduling)
    assert llm.model_runner.cuda_graphs.graphs, "CUDA graphs were not captured"
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, n=4), use_tqdm=False)
    assert [[o["token_ids"] for o in r["outputs"]] for r in outs] == [[w] * 4 for w in want]
    assert llm.stats()["num_computed_prompt_tokens"] <= sum(len(p) for p in prompts)
    assert_no_leaked_blocks(llm)
    llm.close()
