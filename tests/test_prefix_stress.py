"""Seeded randomized stress of the scheduler and the prefix-caching block manager.

Each case drives one engine with add_request / step / abort_request: random arrivals between
steps, prompts built from a few shared system prompts plus random suffixes (some exact
duplicates), random max_tokens, some requests of n > 1 samples (forked from one prefill, blocks
shared, copy-on-write), a block pool barely larger than one sequence, and token budgets that
force chunked prefill and preemption. Every schedule() and every step checks the invariants
of the scheduler (request_lifecycle.py) and block_manager.py; every case ends with greedy tokens equal to those of an
engine with caching off and ample memory, and with every block back in the free list once.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

import aios.engine.block_manager as block_manager_module
from aios import LLM, SamplingParams
from aios.engine.sequence import SequenceStatus
from aios.utils.tiny_checkpoint import make_checkpoint

MAX_MODEL_LEN = 96
MAX_STEPS = 5_000                     # far above what any case needs: more means a livelock
NUM_CASES = 24                        # per block size


@pytest.fixture(scope="module")
def stress_ckpt(tmp_path_factory) -> str:
    """One layer, hidden 32: an engine step costs about a millisecond."""
    return make_checkpoint(str(tmp_path_factory.mktemp("stress-qwen3")), hidden_size=32, intermediate_size=64,
                           num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, seed=3)


@pytest.fixture(scope="module")
def reference(stress_ckpt):
    """Greedy tokens of an engine with caching off and memory to spare."""
    llm = LLM(stress_ckpt, device="cpu", dtype="float32", enable_prefix_caching=False,
              max_model_len=MAX_MODEL_LEN)

    def run(prompts: list[list[int]], max_tokens: list[int]) -> list[list[int]]:
        outs = llm.generate(prompts, [greedy(m) for m in max_tokens], use_tqdm=False)
        return [o["token_ids"] for o in outs]
    return run


def greedy(max_tokens: int, n: int = 1) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, n=n)


# ---- one case -------------------------------------------------------------------------------------

@dataclass
class Case:
    block_size: int
    num_blocks: int
    max_num_batched_tokens: int
    max_num_seqs: int
    chunked: bool
    prompts: list[list[int]]
    max_tokens: list[int]
    seed: int
    ns: list[int] = field(default_factory=list)   # samples per request (n)

    def engine_kwargs(self) -> dict:
        return dict(kvcache_block_size=self.block_size, num_kvcache_blocks=self.num_blocks,
                    max_num_batched_tokens=self.max_num_batched_tokens, max_num_seqs=self.max_num_seqs,
                    enable_chunked_prefill=self.chunked, max_model_len=MAX_MODEL_LEN)


def make_case(seed: int, block_size: int) -> Case:
    rng = random.Random(seed)
    # a small alphabet makes equal blocks at different depths common (the collision guard's test)
    alphabet = list(range(3, 7)) if rng.random() < 0.25 else list(range(3, 512))

    def tokens(n: int) -> list[int]:
        return [rng.choice(alphabet) for _ in range(n)]

    systems = [tokens(rng.randint(1, 40)) for _ in range(rng.randint(1, 3))]
    prompts: list[list[int]] = []
    for _ in range(rng.randint(20, 48)):
        if prompts and rng.random() < 0.2:
            prompt = list(rng.choice(prompts))                         # exact duplicate
        else:
            system = rng.choice(systems) if rng.random() < 0.8 else []
            prompt = system + tokens(rng.randint(0 if system else 1, 20))
        prompts.append(prompt[: MAX_MODEL_LEN - 1])
    max_tokens = [rng.randint(1, 16) for _ in prompts]
    need = max(-(-min(len(p) + m, MAX_MODEL_LEN) // block_size) for p, m in zip(prompts, max_tokens))
    chunked = rng.random() < 0.85
    max_num_seqs = rng.choice([1, 2, 3, 8, 64])
    ns = [min(max_num_seqs, rng.choice([1, 1, 1, 2, 3])) for _ in prompts]
    return Case(block_size=block_size, num_blocks=need + rng.randint(0, need), chunked=chunked,
                max_num_batched_tokens=rng.choice([1, 3, 7, 16, 33, 64]) if chunked else MAX_MODEL_LEN,
                max_num_seqs=max_num_seqs, prompts=prompts, max_tokens=max_tokens, seed=seed, ns=ns)


@dataclass
class Tally:
    steps: int = 0
    chunked_steps: int = 0            # steps with a prefill chunk that did not reach the prompt's end
    preemptions: int = 0
    hits: int = 0
    aborts: int = 0
    forks: int = 0
    per_case_steps: list[int] = field(default_factory=list)


# ---- invariants ----------------------------------------------------------------------------------

def check_block_manager(llm: LLM, batch=None) -> None:
    """ref_count == number of running sequences holding the block; free XOR used; the cache maps
    each key to a block whose stored tokens hash to it; waiting sequences hold nothing. `batch`: a
    schedule not launched yet, whose chunks' full blocks are cached already."""
    bm, sched = llm.block_manager, llm.scheduler
    scheduled = {id(s): s.num_computed_tokens + n for s, n in zip(batch.seqs, batch.num_new_tokens)} if batch else {}
    holders: Counter[int] = Counter()
    for seq in sched.running:
        assert seq.status == SequenceStatus.RUNNING
        assert len(set(seq.block_table)) == len(seq.block_table), "one block twice in a block table"
        assert len(seq.block_table) * bm.block_size >= seq.num_computed_tokens
        written = scheduled.get(id(seq), seq.num_computed_tokens)   # written by the time anything reads
        assert len(seq.block_hashes) <= written // bm.block_size
        holders.update(seq.block_table)
        for i, block_id in enumerate(seq.block_table):
            block = bm.blocks[block_id]
            if block.hash != -1:       # cached: full, written (or by this step), holding this seq's tokens
                assert (i + 1) * bm.block_size <= written
                assert block.token_ids == seq.block_token_ids(i)
                assert block.hash == seq.block_hashes[i]
    for seq in sched.waiting:
        assert seq.status == SequenceStatus.WAITING
        assert seq.block_table == [] and seq.block_hashes == [] and seq.num_computed_tokens == 0
    assert len({id(s) for s in sched.running} | {id(s) for s in sched.waiting}) == \
        len(sched.running) + len(sched.waiting), "a sequence in two queues"
    for block in bm.blocks:
        assert block.ref_count == holders[block.block_id], f"block {block.block_id}: ref count off"
        assert (block.ref_count == 0) == (block.block_id in bm.free_block_ids), "free and used"
    for h, block_id in bm.hash_to_block.items():
        block = bm.blocks[block_id]
        assert block.hash == h and len(block.token_ids) == bm.block_size
        assert block_manager_module.hash_block(block.token_ids, block.prev_hash) == h
    sched.check_invariants()


def check_batch(llm: LLM, batch, had_work: bool) -> None:
    """What schedule() promises, checked before the model runs."""
    bm, sched = llm.block_manager, llm.scheduler
    assert batch.seqs or not had_work, "a step scheduled nothing while work was waiting (livelock)"
    assert batch.num_tokens <= sched.max_num_batched_tokens and len(batch) <= sched.max_num_seqs
    assert len({id(s) for s in batch.seqs}) == len(batch)
    starts = {id(s): s.num_computed_tokens for s in batch.seqs}
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        assert seq in sched.running and n >= 1
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
        assert end <= len(seq) and len(seq.block_table) * bm.block_size >= end
        if not sched.chunked_prefill:
            assert end == len(seq)
        # the chunk writes only into blocks this sequence owns alone and the cache does not hold, or
        # into a block it completes, cached as it was scheduled: then every other holder is in this
        # batch and only reads it (its own chunk starts after the block)
        for i in range(start // bm.block_size, (end - 1) // bm.block_size + 1):
            block = bm.blocks[seq.block_table[i]]
            if block.ref_count == 1 and block.hash == -1:
                continue
            assert (i + 1) * bm.block_size <= end and block.hash == seq.block_hashes[i], \
                f"chunk writes into shared block {block.block_id}"
            readers = [s for s in sched.running if s is not seq and block.block_id in s.block_table]
            assert len(readers) == block.ref_count - 1
            assert all(starts.get(id(r), -1) >= (i + 1) * bm.block_size for r in readers), \
                f"block {block.block_id} is read by a sequence outside this step or before it is written"
    check_block_manager(llm, batch)


def check_drained(llm: LLM) -> None:
    bm = llm.block_manager
    assert not llm.scheduler.running and not llm.scheduler.waiting
    assert bm.num_used_blocks == 0 and all(b.ref_count == 0 for b in bm.blocks)
    assert sorted(bm.free_block_ids) == list(range(bm.num_blocks)), "the free list lost or doubled a block"
    check_block_manager(llm)


# ---- the driver ----------------------------------------------------------------------------------

def run_case(ckpt: str, case: Case, want: list[list[int]], tally: Tally) -> None:
    rng = random.Random(case.seed + 1)
    llm = LLM(ckpt, device="cpu", dtype="float32", **case.engine_kwargs())

    pending = list(range(len(case.prompts)))
    seqs = {}
    aborted: set[int] = set()
    num_steps = 0
    while pending or llm.has_unfinished_requests():
        assert num_steps < MAX_STEPS, f"case {case.seed}: not done after {MAX_STEPS} steps (livelock?)"
        if pending and (rng.random() < 0.15 or not llm.has_unfinished_requests()):
            for _ in range(rng.randint(1, 3)):
                if pending:
                    i = pending.pop(0)
                    seqs[i] = llm.add_request(case.prompts[i], greedy(case.max_tokens[i], case.ns[i]))
        live = [i for i, s in seqs.items() if not all(x.is_finished for x in samples(s))]
        if live and rng.random() < 0.02:
            i = rng.choice(live)
            llm.abort_request(seqs[i].seq_id)
            aborted.add(i)
            check_block_manager(llm)
        had_work = llm.scheduler.has_unfinished()   # (a step in flight alone is no work to schedule)
        batch = llm.scheduler.schedule()
        check_batch(llm, batch, had_work)
        tally.chunked_steps += not all(batch.samples)
        llm.step(batch)
        num_steps += 1
        check_block_manager(llm)
    tally.steps += num_steps
    tally.per_case_steps.append(num_steps)
    check_drained(llm)
    for i, parent in seqs.items():
        for seq in samples(parent):
            got = seq.output_token_ids
            if i in aborted:
                assert got == want[i][: len(got)], f"case {case.seed}: aborted request {i} diverged"
            else:
                assert got == want[i], f"case {case.seed}: request {i} ({case}) differs from the reference"
    stats = llm.stats()
    tally.preemptions += stats["num_preemptions"]
    tally.hits += stats["prefix_cache_hits"]
    tally.aborts += len(aborted)
    tally.forks += stats["num_forked_seqs"]


def samples(parent) -> list:
    return parent.group.seqs if parent.group is not None else [parent]


def run_cases(ckpt: str, reference, seeds: range, block_size: int) -> Tally:
    tally = Tally()
    for seed in seeds:
        case = make_case(seed, block_size)
        run_case(ckpt, case, reference(case.prompts, case.max_tokens), tally)
    return tally


@pytest.mark.slow
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_random_arrivals_aborts_and_tiny_pools_keep_outputs_and_blocks_exact(stress_ckpt, reference, block_size):
    first = 1000 * block_size
    tally = run_cases(stress_ckpt, reference, range(first, first + NUM_CASES), block_size)
    # the cases really exercised what they are meant to
    assert tally.preemptions > 0 and tally.hits > 0 and tally.aborts > 0 and tally.chunked_steps > 0
    assert tally.forks > 0
    assert max(tally.per_case_steps) >= 100


@pytest.mark.slow
@pytest.mark.parametrize("block_size", [1, 4])
def test_every_block_hash_colliding_still_gives_exact_outputs(stress_ckpt, reference, monkeypatch, block_size):
    """hash_block made constant: only the collision guard keeps a lookup from a wrong hit."""
    monkeypatch.setattr(block_manager_module, "hash_block", lambda token_ids, prev_hash: 7)
    first = 5000 + 100 * block_size
    tally = run_cases(stress_ckpt, reference, range(first, first + NUM_CASES // 4), block_size)
    assert tally.hits > 0
