"""Lesson 13: the hash chain over full blocks, its collision guard, least-recently-freed reuse, and
the learner's block manager in the real engine with prefix caching on."""

import pytest

from aios import LLM, SamplingParams
from aios.engine.sequence import PLACEHOLDER, Sequence

LESSON = "13"
BS = 4                                        # tokens per block in the unit checks


def seq_of(tokens: list[int], seq_id: int = 0) -> Sequence:
    return Sequence(seq_id, tokens, SamplingParams(), BS)


def computed(impl, bm, tokens: list[int], seq_id: int = 0) -> Sequence:
    """A sequence whose every token has been computed, its full blocks registered."""
    seq = seq_of(tokens, seq_id)
    assert bm.allocate(seq, len(tokens)) == len(tokens)
    seq.num_computed_tokens = len(tokens)
    bm.register_computed_blocks(seq)
    return seq


A = [10, 11, 12, 13, 20, 21, 22, 23, 30, 31]       # two full blocks and two tokens


@pytest.mark.readme("Build it: the hash chain")
def test_hash_block_chains_every_earlier_token(impl):
    h0 = impl.hash_block([1, 2, 3, 4], -1)
    assert isinstance(h0, int) and 0 <= h0 < 2**63
    assert impl.hash_block([1, 2, 3, 4], -1) == h0, "a hash must be the same every time"
    assert impl.hash_block([1, 2, 3, 5], -1) != h0
    assert impl.hash_block([1, 2, 3, 4], h0) != h0, "the same tokens after another prefix hash differently"
    assert impl.hash_block([5, 6, 7, 8], h0) != impl.hash_block([5, 6, 7, 8], impl.hash_block([1, 2, 3, 5], -1))


@pytest.mark.readme("Build it: registering blocks")
def test_registering_enters_the_full_computed_blocks_only(impl):
    bm = impl.BlockManager(8, BS)
    seq = computed(impl, bm, A)
    h0 = impl.hash_block(A[:4], -1)
    h1 = impl.hash_block(A[4:8], h0)
    assert seq.block_hashes == [h0, h1], "two full blocks; the third holds two tokens and is not cached"
    assert bm.hash_to_block == {h0: seq.block_table[0], h1: seq.block_table[1]}
    b1 = bm.blocks[seq.block_table[1]]
    assert (b1.hash, b1.prev_hash, b1.token_ids) == (h1, h0, A[4:8])
    assert bm.blocks[seq.block_table[2]].hash == -1
    bm.register_computed_blocks(seq)                                    # again: nothing new
    assert seq.block_hashes == [h0, h1] and len(bm.hash_to_block) == 2


@pytest.mark.readme("Build it: registering blocks")
def test_a_block_is_registered_once_its_tokens_are_computed_and_known(impl):
    bm = impl.BlockManager(8, BS)
    seq = seq_of(A[:8])
    bm.allocate(seq, 8)
    seq.num_computed_tokens = 6                                         # block 1 is half written
    bm.register_computed_blocks(seq)
    assert len(seq.block_hashes) == 1 and len(bm.hash_to_block) == 1
    seq.token_ids[7] = PLACEHOLDER                                      # its last token is still on the GPU
    seq.num_computed_tokens = 8
    bm.register_computed_blocks(seq)
    assert len(seq.block_hashes) == 1, "a block holding a PLACEHOLDER waits until its token is read"
    seq.token_ids[7] = A[7]
    bm.register_computed_blocks(seq)
    assert len(seq.block_hashes) == 2 and len(bm.hash_to_block) == 2
    off = impl.BlockManager(8, BS, enable_prefix_caching=False)
    computed(impl, off, A)
    assert not off.hash_to_block, "prefix caching off: nothing is registered"


@pytest.mark.readme("Build it: registering blocks")
def test_a_scheduled_chunk_caches_the_full_blocks_it_completes_before_they_are_computed(impl):
    bm = impl.BlockManager(8, BS)
    seq = seq_of(A)
    assert bm.allocate(seq, 6) == 6                                     # a chunk of 6, not run yet
    bm.register_computed_blocks(seq, num_tokens=6)                      # as the scheduler adds it
    h0 = impl.hash_block(A[:4], -1)
    assert seq.block_hashes == [h0] and bm.hash_to_block == {h0: seq.block_table[0]}, \
        "num_tokens=6: block 0 is full, block 1 is not"
    bm.register_computed_blocks(seq)                                    # default: num_computed_tokens, 0
    assert seq.block_hashes == [h0]
    later = seq_of(A[:4] + [1, 2], 1)                                   # admitted after it, same step
    assert bm.match_prefix(later)[0] == seq.block_table[:1]


@pytest.mark.readme("Build it: registering blocks")
def test_the_same_prefix_computed_twice_at_once_stays_registered_once(impl):
    bm = impl.BlockManager(8, BS)
    first, second = computed(impl, bm, A[:8], 0), computed(impl, bm, A[:8], 1)
    assert second.block_hashes == first.block_hashes, "the second sequence still knows its chain"
    assert set(bm.hash_to_block.values()) == set(first.block_table)
    assert all(bm.blocks[b].hash == -1 for b in second.block_table)


@pytest.mark.readme("Build it: matching a prefix")
def test_a_prompt_hits_the_cached_blocks_of_its_leading_full_blocks(impl):
    bm = impl.BlockManager(8, BS)
    a = computed(impl, bm, A)
    ids, hashes = bm.match_prefix(seq_of(A[:8] + [99, 98, 97], 1))
    assert ids == a.block_table[:2] and hashes == a.block_hashes
    assert bm.match_prefix(seq_of(A[:8], 2))[0] == a.block_table[:1], \
        "a prompt of exactly two blocks reuses one: its last token must be computed"
    assert bm.match_prefix(seq_of(A[:4] + [0, 0, 0, 0, 1], 3))[0] == a.block_table[:1]
    assert bm.match_prefix(seq_of([0] + A[1:], 4)) == ([], [])


@pytest.mark.readme("Build it: matching a prefix")
def test_equal_tokens_at_another_chain_position_do_not_hit(impl):
    bm = impl.BlockManager(8, BS)
    computed(impl, bm, A)
    assert bm.match_prefix(seq_of(A[4:8] + [1, 2, 3, 4, 5], 1)) == ([], []), \
        "block 1's tokens as a first block: another chain, no hit"


@pytest.mark.readme("Build it: matching a prefix")
def test_a_hash_collision_is_not_a_hit(impl):
    bm = impl.BlockManager(8, BS)
    a = computed(impl, bm, A)
    # Pretend a collision: the hash maps to a block whose tokens (or chain position) differ.
    bm.blocks[a.block_table[1]].token_ids = [10, 11, 12, 14]
    assert bm.match_prefix(seq_of(A, 1))[0] == a.block_table[:1], "the stored tokens must equal the query's"
    bm.blocks[a.block_table[1]].token_ids = A[4:8]
    bm.blocks[a.block_table[1]].prev_hash = 12345
    assert bm.match_prefix(seq_of(A, 2))[0] == a.block_table[:1], "the stored prev_hash must equal the chain's"
    off = impl.BlockManager(8, BS, enable_prefix_caching=False)
    computed(impl, off, A)
    assert off.match_prefix(seq_of(A, 3)) == ([], [])


@pytest.mark.readme("Build it: LRU reuse")
def test_free_puts_uncached_blocks_first_and_a_chains_tail_before_its_head(impl):
    bm = impl.BlockManager(8, BS)
    a = computed(impl, bm, A)                                           # blocks 0, 1 cached; 2 not
    assert a.block_table == [0, 1, 2]
    bm.free(a)
    assert a.block_table == [] and a.block_hashes == []
    assert list(bm.free_block_ids) == [2, 3, 4, 5, 6, 7, 1, 0]
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert len(bm.hash_to_block) == 2, "freed blocks keep their cached contents until reused"
    with pytest.raises(AssertionError):
        _double_free(bm)


def _double_free(bm):
    seq = seq_of([1, 2, 3], 9)
    seq.block_table = [3]                                               # a block that is already free
    bm.free(seq)


@pytest.mark.readme("Build it: LRU reuse")
def test_a_shared_block_stays_used_until_its_last_sequence_frees_it(impl):
    bm = impl.BlockManager(8, BS)
    a = computed(impl, bm, A)
    b = seq_of(A[:8] + [5], 1)
    assert bm.allocate_cached_prefix(b) == 8
    assert [bm.blocks[i].ref_count for i in a.block_table[:2]] == [2, 2]
    bm.free(a)
    assert [bm.blocks[i].ref_count for i in b.block_table] == [1, 1]
    assert not set(b.block_table) & set(bm.free_block_ids)
    bm.free(b)
    assert bm.num_free_blocks == 8


@pytest.mark.readme("Build it: LRU reuse")
def test_reusing_a_cached_block_evicts_it_and_only_it(impl):
    bm = impl.BlockManager(8, BS)
    a = computed(impl, bm, A)
    h0, h1 = a.block_hashes
    bm.free(a)                                                          # free order: 2..7, then 1, then 0
    filler = seq_of(list(range(100, 128)), 1)
    assert bm.allocate(filler, 28) == 28                                # 7 blocks: 2..7 and 1
    assert filler.block_table == [2, 3, 4, 5, 6, 7, 1]
    assert h1 not in bm.hash_to_block and bm.hash_to_block.get(h0) == 0
    evicted = bm.blocks[1]
    assert (evicted.hash, evicted.prev_hash, evicted.token_ids, evicted.ref_count) == (-1, -1, [], 1)
    assert bm.match_prefix(seq_of(A, 2))[0] == [0], "block 0 is still cached; block 1 was reused"


PROMPT = list(range(3, 60))                   # 57 tokens: three full 16-token blocks, then 9


def run_engine(ckpt: str, block_manager_cls=None, **kw):
    extra = {"block_manager_cls": block_manager_cls} if block_manager_cls else {}
    llm = LLM(ckpt, device="cpu", dtype="float32", kvcache_block_size=16, enable_prefix_caching=True, **kw, **extra)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    prompts = [PROMPT, PROMPT[:40] + [7, 8, 9], list(range(200, 240))]
    try:
        first = llm.generate(prompts, params, use_tqdm=False)
        again = llm.generate([PROMPT, prompts[2]], params, use_tqdm=False)
        bm = llm.block_manager
        leaked = bm.num_used_blocks, [b.block_id for b in bm.blocks if b.ref_count]
        return ([o["token_ids"] for o in first + again], [o["num_cached_tokens"] for o in again],
                llm.stats()["prefix_cache_hits"], leaked)
    finally:
        llm.close()


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("pool", [None, 8], ids=["roomy-pool", "8-block-pool-evicts"])
def test_the_engine_with_your_block_manager_hits_the_cache_and_keeps_the_tokens(impl, tiny_ckpt, pool):
    kw = {} if pool is None else {"num_kvcache_blocks": pool}
    want, _, _, _ = run_engine(tiny_ckpt, **kw)
    tokens, cached, hits, leaked = run_engine(tiny_ckpt, impl.BlockManager, **kw)
    assert tokens == want, "prefix-cache hits must not change the greedy tokens"
    assert hits > 0 and cached[0] > 0, f"the repeated prompt should hit the cache (num_cached_tokens {cached})"
    assert leaked == (0, []), f"blocks still used after every request finished: {leaked}"
