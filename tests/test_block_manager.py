"""BlockManager on its own (no model): every invariant its docstring states, one test each.

A sequence's K/V "is written" here when the test says so: it advances num_computed_tokens and
calls register_computed_blocks, as the Scheduler does once a step's tokens are known (a prefill
chunk's blocks it registers earlier, as it schedules the chunk: register_computed_blocks(seq,
num_tokens)). `admit` does what the scheduler does for a fresh sequence: prefix-cache hits first,
then fresh blocks.
"""

import pytest

import aios.engine.block_manager as block_manager_module
from aios.engine.block_manager import BlockManager, hash_block
from aios.engine.sequence import Sequence
from aios.sampling_params import SamplingParams

BLOCK_SIZE = 4


def make_seq(token_ids: list[int], seq_id: int = 0, block_size: int = BLOCK_SIZE) -> Sequence:
    return Sequence(seq_id, token_ids, SamplingParams(temperature=0), block_size=block_size)


def admit(bm: BlockManager, seq: Sequence, num_new_tokens: int) -> int:
    """The scheduler's admission: a sequence without blocks takes its cached prefix (those tokens
    count as computed), then slots for up to num_new_tokens more; returns how many got slots."""
    if not seq.block_table:
        seq.num_computed_tokens = seq.num_cached_tokens = bm.allocate_cached_prefix(seq)
    return bm.allocate(seq, min(num_new_tokens, len(seq) - seq.num_computed_tokens))


def admit_and_compute(bm: BlockManager, seq: Sequence) -> int:
    """Allocate slots for all of seq's tokens, 'run' them and register the full blocks; return how
    many tokens came from the prefix cache."""
    got = admit(bm, seq, len(seq))
    assert seq.num_computed_tokens + got == len(seq)
    seq.num_computed_tokens += got
    bm.register_computed_blocks(seq)
    return seq.num_cached_tokens


def check_invariants(bm: BlockManager, holders: list[Sequence]) -> None:
    """free XOR used; ref_count == number of holders; the free list holds each block once."""
    held: dict[int, int] = {}
    for seq in holders:
        assert len(set(seq.block_table)) == len(seq.block_table), "a block twice in one block table"
        for b in seq.block_table:
            held[b] = held.get(b, 0) + 1
    for block in bm.blocks:
        assert block.ref_count == held.get(block.block_id, 0)
        assert (block.ref_count == 0) == (block.block_id in bm.free_block_ids)
    assert bm.num_free_blocks + bm.num_used_blocks == bm.num_blocks
    for h, b in bm.hash_to_block.items():
        block = bm.blocks[b]
        assert block.hash == h == block_manager_module.hash_block(block.token_ids, block.prev_hash)


def tokens(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def test_a_fresh_manager_has_every_block_free_once():
    bm = BlockManager(8, BLOCK_SIZE)
    assert bm.num_free_blocks == 8 and bm.num_used_blocks == 0
    assert list(bm.free_block_ids) == list(range(8))
    assert all(b.ref_count == 0 and b.hash == -1 for b in bm.blocks)


def test_allocate_takes_ceil_tokens_over_block_size_blocks_each_used_once():
    bm = BlockManager(8, BLOCK_SIZE)
    seq = make_seq(tokens(10, 9))
    assert bm.allocate(seq, 9) == 9
    assert len(seq.block_table) == 3
    assert bm.num_used_blocks == 3 and bm.num_free_blocks == 5
    check_invariants(bm, [seq])


def test_allocate_grants_only_the_tokens_that_free_blocks_can_hold():
    bm = BlockManager(2, BLOCK_SIZE)
    seq = make_seq(tokens(10, 11))
    assert bm.allocate(seq, 11) == 8               # two blocks: 8 slots
    assert bm.num_free_blocks == 0
    seq.num_computed_tokens = 8
    assert bm.allocate(seq, 3) == 0                # nothing left: the scheduler must preempt
    check_invariants(bm, [seq])


def test_allocate_reuses_the_tail_of_a_partly_filled_block_before_taking_a_new_one():
    bm = BlockManager(4, BLOCK_SIZE)
    seq = make_seq(tokens(10, 6))
    bm.allocate(seq, 6)
    seq.num_computed_tokens = 6
    seq.token_ids.append(99)
    assert bm.allocate(seq, 1) == 1 and len(seq.block_table) == 2   # slot 7 is in block 1
    seq.num_computed_tokens = 7
    seq.token_ids.append(98)
    seq.token_ids.append(97)
    seq.num_computed_tokens = 8
    assert bm.allocate(seq, 1) == 1 and len(seq.block_table) == 3   # slot 8 opens block 2


def test_free_returns_every_block_and_ref_counts_to_zero():
    bm = BlockManager(8, BLOCK_SIZE)
    seq = make_seq(tokens(10, 13))
    admit_and_compute(bm, seq)
    bm.free(seq)
    assert seq.block_table == [] and seq.block_hashes == []
    assert bm.num_used_blocks == 0 and sorted(bm.free_block_ids) == list(range(8))
    check_invariants(bm, [])


def test_ref_count_is_the_number_of_sequences_holding_a_block():
    bm = BlockManager(16, BLOCK_SIZE)
    prefix = tokens(10, 8)
    a, b, c = make_seq(prefix + [1, 2], 0), make_seq(prefix + [3], 1), make_seq(prefix + [4, 5, 6], 2)
    admit_and_compute(bm, a)
    assert admit_and_compute(bm, b) == 8
    assert admit_and_compute(bm, c) == 8
    shared = a.block_table[:2]
    assert b.block_table[:2] == shared == c.block_table[:2]
    assert [bm.blocks[i].ref_count for i in shared] == [3, 3]
    check_invariants(bm, [a, b, c])
    bm.free(b)
    assert [bm.blocks[i].ref_count for i in shared] == [2, 2]
    check_invariants(bm, [a, c])
    bm.free(a)
    bm.free(c)
    check_invariants(bm, [])
    assert bm.num_used_blocks == 0


def test_double_free_is_detected():
    bm = BlockManager(4, BLOCK_SIZE)
    seq = make_seq(tokens(10, 6))
    bm.allocate(seq, 6)
    stale_table = list(seq.block_table)
    bm.free(seq)
    seq.block_table = stale_table                  # a caller that kept a stale block table
    with pytest.raises(AssertionError, match="double free"):
        bm.free(seq)


def test_blocks_enter_the_cache_only_when_registered_after_their_kv_is_written():
    bm = BlockManager(8, BLOCK_SIZE)
    a = make_seq(tokens(10, 9), 0)
    bm.allocate(a, 9)                              # slots allocated, nothing computed yet
    assert bm.hash_to_block == {}
    b = make_seq(tokens(10, 9), 1)
    bm.allocate(b, 9)
    assert b.num_cached_tokens == 0 and not set(a.block_table) & set(b.block_table)
    a.num_computed_tokens = 5                      # first chunk written: block 0 full, block 1 not
    bm.register_computed_blocks(a)
    assert list(bm.hash_to_block.values()) == [a.block_table[0]]
    a.num_computed_tokens = 9
    bm.register_computed_blocks(a)
    assert sorted(bm.hash_to_block.values()) == sorted(a.block_table[:2])   # the partial block 2 never


def test_a_scheduled_chunk_caches_the_full_blocks_it_completes_and_a_later_admission_hits_them():
    bm = BlockManager(8, BLOCK_SIZE)
    a = make_seq(tokens(10, 14), 0)
    assert bm.allocate(a, 10) == 10                # a chunk of 10: blocks 0, 1 full, block 2 half
    bm.register_computed_blocks(a, num_tokens=a.num_computed_tokens + 10)
    assert a.num_computed_tokens == 0 and len(a.block_hashes) == 2
    assert sorted(bm.hash_to_block.values()) == sorted(a.block_table[:2])
    b = make_seq(tokens(10, 9), 1)
    assert admit(bm, b, 9) == 1 and b.num_cached_tokens == 8 and b.block_table[:2] == a.block_table[:2]
    check_invariants(bm, [a, b])
    bm.register_computed_blocks(a)                 # the default, num_computed_tokens (0): nothing new
    assert len(a.block_hashes) == 2


def test_unregistering_a_failed_chunk_drops_only_the_blocks_past_the_computed_tokens():
    bm = BlockManager(8, BLOCK_SIZE)
    a = make_seq(tokens(10, 14), 0)
    bm.allocate(a, 14)
    a.num_computed_tokens = 5                      # launched: block 0 written, block 1 half
    bm.register_computed_blocks(a)
    kept = dict(bm.hash_to_block)
    bm.register_computed_blocks(a, num_tokens=14)  # the next chunk, scheduled: blocks 1, 2
    assert len(bm.hash_to_block) == 3
    dup = make_seq(tokens(10, 14), 1)              # the same tokens, its copies left out as duplicates
    bm.allocate(dup, 14)
    bm.register_computed_blocks(dup, num_tokens=14)
    bm.unregister_uncomputed_blocks(dup)           # dup's launch failed: a's entries stay
    assert len(bm.hash_to_block) == 3 and dup.block_hashes == []
    bm.unregister_uncomputed_blocks(a)             # a's launch failed: its chunk never runs
    assert bm.hash_to_block == kept and len(a.block_hashes) == 1
    assert [bm.blocks[i].hash for i in a.block_table[1:]] == [-1, -1, -1]
    assert bm.blocks[a.block_table[1]].token_ids == []
    check_invariants(bm, [a, dup])


def test_a_fully_cached_prompt_still_leaves_its_last_token_to_compute():
    bm = BlockManager(16, BLOCK_SIZE)
    admit_and_compute(bm, make_seq(tokens(10, 12), 0))               # 3 full blocks cached
    exact = make_seq(tokens(10, 12), 1)                                # 12 = 3 blocks exactly
    assert admit(bm, exact, 12) == 4 and exact.num_cached_tokens == 8
    longer = make_seq(tokens(10, 13), 2)                               # 13: all 3 blocks hit
    assert admit(bm, longer, 13) == 1 and longer.num_cached_tokens == 12
    assert longer.num_computed_tokens == 12


def test_the_same_block_computed_twice_is_registered_once_and_both_free_cleanly():
    bm = BlockManager(8, BLOCK_SIZE)
    a, b = make_seq(tokens(10, 9), 0), make_seq(tokens(10, 9), 1)
    bm.allocate(a, 9)
    bm.allocate(b, 9)                              # neither looked the cache up (prompt logprobs, say)
    for seq in (a, b):
        seq.num_computed_tokens = 9
        bm.register_computed_blocks(seq)
    assert sorted(bm.hash_to_block.values()) == sorted(a.block_table[:2])
    assert all(bm.blocks[i].hash == -1 for i in b.block_table)
    assert a.block_hashes == b.block_hashes        # b still knows its chain, for its later blocks
    check_invariants(bm, [a, b])
    a_blocks, b_blocks = list(a.block_table), list(b.block_table)
    bm.free(a)
    bm.free(b)
    check_invariants(bm, [])
    # b's unhashed duplicates are handed out first, a's cached blocks last (its head last of all)
    assert list(bm.free_block_ids) == b_blocks + [a_blocks[2], 6, 7, a_blocks[1], a_blocks[0]]


def test_eviction_takes_unhashed_blocks_first_then_cached_ones_least_recently_freed_tail_first():
    bm = BlockManager(8, BLOCK_SIZE)
    old, new = make_seq(tokens(10, 12), 0), make_seq(tokens(50, 12), 1)
    partial = make_seq(tokens(90, 3), 2)           # one block, never full: never cached
    for seq in (old, new, partial):
        admit_and_compute(bm, seq)
    old_blocks, new_blocks, partial_block = list(old.block_table), list(new.block_table), partial.block_table[0]
    bm.free(old)
    bm.free(new)
    bm.free(partial)
    want = [partial_block, 7] + old_blocks[::-1] + new_blocks[::-1]
    assert list(bm.free_block_ids) == want
    taker = make_seq(tokens(200, 4 * 8), 3)
    bm.allocate(taker, 4 * 3)                      # 3 blocks: partial, the never-used 7, old's tail
    assert taker.block_table == want[:3]
    assert old_blocks[2] not in bm.hash_to_block.values()
    # old's first two blocks and all of new are still cached
    assert bm.match_prefix(make_seq(tokens(10, 13), 4))[0] == old_blocks[:2]
    assert bm.match_prefix(make_seq(tokens(50, 13), 5))[0] == new_blocks


def test_a_freed_cached_block_stays_hittable_until_it_is_handed_out_again():
    bm = BlockManager(2, BLOCK_SIZE)
    a = make_seq(tokens(10, 5), 0)
    admit_and_compute(bm, a)
    block = a.block_table[0]
    bm.free(a)
    assert bm.blocks[block].ref_count == 0 and block in bm.free_block_ids
    assert bm.hash_to_block == {bm.blocks[block].hash: block}          # lazy: not evicted on free
    again = make_seq(tokens(10, 5), 1)
    assert admit_and_compute(bm, again) == 4 and again.block_table[0] == block
    assert block not in bm.free_block_ids and bm.blocks[block].ref_count == 1
    bm.free(again)
    other = make_seq(tokens(70, 8), 2)             # needs both blocks: evicts the cached one
    bm.allocate(other, 8)
    assert block in other.block_table
    assert bm.hash_to_block == {} and bm.blocks[block].hash == -1 and bm.blocks[block].token_ids == []
    assert admit(bm, make_seq(tokens(10, 5), 3), 5) == 0               # a miss now (and no room)


def test_hash_chain_covers_every_earlier_block():
    block = tokens(10, BLOCK_SIZE)
    assert hash_block(block, -1) == hash_block(list(block), -1)
    assert hash_block(block, -1) != hash_block(block, hash_block(tokens(50, BLOCK_SIZE), -1))
    bm = BlockManager(8, BLOCK_SIZE)
    admit_and_compute(bm, make_seq(tokens(0, 4) + block + [1], 0))
    seq = make_seq(tokens(100, 4) + block + [1], 1)   # same second block, different first block
    assert admit(bm, seq, 9) == 9 and seq.num_cached_tokens == 0


@pytest.fixture
def constant_hash(monkeypatch):
    """Every block hashes to the same key: only the collision guard stands between a lookup and
    a wrong hit."""
    monkeypatch.setattr(block_manager_module, "hash_block", lambda token_ids, prev_hash: 42)


def test_a_hash_collision_never_hits_a_block_with_other_tokens(constant_hash):
    bm = BlockManager(8, BLOCK_SIZE)
    a = make_seq(tokens(10, 9), 0)
    admit_and_compute(bm, a)
    assert bm.hash_to_block == {42: a.block_table[0]}     # the second block's key was taken
    other = make_seq(tokens(30, 9), 1)
    assert admit_and_compute(bm, other) == 0
    assert not set(other.block_table) & set(a.block_table)
    same = make_seq(tokens(10, 9), 2)
    assert admit_and_compute(bm, same) == 4                # the true hit still hits
    check_invariants(bm, [a, other, same])


def test_a_hash_collision_never_hits_equal_tokens_at_another_depth(constant_hash):
    # Blocks 0 and 1 hold the same tokens. Under a collision, block 1's lookup finds block 0's
    # cache entry with equal tokens; reusing it would read K/V roped for positions 0..3 at 4..7
    # and put one block twice in one block table.
    bm = BlockManager(8, BLOCK_SIZE)
    repeated = tokens(10, BLOCK_SIZE) * 2 + [1]
    admit_and_compute(bm, make_seq(repeated, 0))
    seq = make_seq(repeated, 1)
    assert admit_and_compute(bm, seq) == BLOCK_SIZE
    assert len(set(seq.block_table)) == len(seq.block_table)


def test_prefix_caching_off_never_hits_nor_registers():
    bm = BlockManager(8, BLOCK_SIZE, enable_prefix_caching=False)
    admit_and_compute(bm, make_seq(tokens(10, 9), 0))
    assert bm.hash_to_block == {}
    assert admit_and_compute(bm, make_seq(tokens(10, 9), 1)) == 0


def test_reset_prefix_cache_forgets_every_cached_block():
    bm = BlockManager(8, BLOCK_SIZE)
    seq = make_seq(tokens(10, 9), 0)
    admit_and_compute(bm, seq)
    bm.free(seq)
    bm.reset_prefix_cache()
    assert bm.hash_to_block == {} and all(b.hash == -1 for b in bm.blocks)
    assert admit_and_compute(bm, make_seq(tokens(10, 9), 1)) == 0
