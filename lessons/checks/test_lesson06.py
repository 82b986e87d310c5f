"""Lesson 06: a block allocator with reference counts, the slot mapping, and the real engine on your
block manager (a pool small enough to force preemption)."""

import numpy as np
import pytest
import torch

from aios import LLM, SamplingParams
from aios.engine.sequence import Sequence

LESSON = "06"
BLOCK = 4


def seq_of(n: int, seq_id: int = 0) -> Sequence:
    return Sequence(seq_id, list(range(3, 3 + n)), SamplingParams(), BLOCK)


def assert_consistent(bm) -> None:
    """Free or used, never both; ref_count = how many block tables hold the block."""
    free = set(bm.free_block_ids)
    for b in bm.blocks:
        assert (b.ref_count == 0) == (b.block_id in free), f"block {b.block_id}: ref_count {b.ref_count}"


@pytest.mark.readme("Build it: blocks_needed")
@pytest.mark.parametrize("have, num_tokens, want", [(0, 1, 1), (0, 4, 1), (0, 5, 2), (1, 4, 0), (1, 9, 2),
                                                     (3, 5, 0), (0, 0, 0)])
def test_blocks_needed_rounds_up_and_subtracts_what_seq_holds(impl, have, num_tokens, want):
    bm = impl.BlockManager(16, BLOCK, enable_prefix_caching=False)
    seq = seq_of(12)
    seq.block_table = list(range(have))
    assert bm.blocks_needed(seq, num_tokens) == want


@pytest.mark.readme("Build it: allocate and free")
def test_allocate_gives_each_token_a_slot_and_free_returns_every_block(impl):
    bm = impl.BlockManager(8, BLOCK, enable_prefix_caching=False)
    a, b = seq_of(10, 0), seq_of(3, 1)
    assert bm.allocate(a, 10) == 10
    assert len(a.block_table) == 3 and bm.num_free_blocks == 5
    assert bm.allocate(b, 3) == 3
    assert len(b.block_table) == 1 and not set(a.block_table) & set(b.block_table)
    assert all(bm.blocks[i].ref_count == 1 for i in a.block_table + b.block_table)
    assert_consistent(bm)
    a.num_computed_tokens = 10                     # a decodes: token 11 fits in its third block ...
    assert bm.allocate(a, 1) == 1 and len(a.block_table) == 3
    a.num_computed_tokens = 12                     # ... token 13 needs a fourth
    assert bm.allocate(a, 1) == 1 and len(a.block_table) == 4
    bm.free(a)
    assert a.block_table == [] and bm.num_free_blocks == 7
    bm.free(b)
    assert bm.num_free_blocks == 8 and bm.num_used_blocks == 0
    assert_consistent(bm)


@pytest.mark.readme("Build it: allocate and free")
def test_a_short_pool_gives_what_it_has_and_zero_when_empty(impl):
    bm = impl.BlockManager(3, BLOCK, enable_prefix_caching=False)
    a, b = seq_of(20, 0), seq_of(5, 1)
    assert bm.allocate(a, 20) == 12                # 3 blocks of 4: 12 of the 20 tokens got slots
    assert len(a.block_table) == 3 and bm.num_free_blocks == 0
    assert bm.allocate(b, 5) == 0 and b.block_table == []
    assert_consistent(bm)


@pytest.mark.readme("Build it: allocate and free")
def test_freed_blocks_are_handed_out_again(impl):
    bm = impl.BlockManager(2, BLOCK, enable_prefix_caching=False)
    for i in range(5):                             # 5 rounds through a 2-block pool
        seq = seq_of(8, i)
        assert bm.allocate(seq, 8) == 8
        assert sorted(seq.block_table) == [0, 1]
        bm.free(seq)
    assert bm.num_free_blocks == 2


@pytest.mark.readme("Build it: allocate and free")
def test_double_free_is_an_error(impl):
    bm = impl.BlockManager(4, BLOCK, enable_prefix_caching=False)
    seq = seq_of(5)
    bm.allocate(seq, 5)
    table = list(seq.block_table)
    bm.free(seq)
    seq.block_table = table                        # a stale copy of its table, freed again
    with pytest.raises(AssertionError):
        bm.free(seq)


@pytest.mark.readme("Build it: slot_mapping")
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_slot_mapping_finds_each_token_through_the_block_table(impl, block_size):
    table = [7, 2, 5, 0, 9]                        # logical block i lives in physical block table[i]
    positions = np.arange(3, 5 * block_size)
    want = np.array([table[p // block_size] * block_size + p % block_size for p in positions])
    got = np.asarray(impl.slot_mapping(table, positions, block_size))
    assert got.tolist() == want.tolist()


@pytest.mark.readme("Build it: slot_mapping")
def test_slot_mapping_of_a_decode_token(impl):
    # position 22 of a sequence whose blocks are [3, 1] (block size 16): block 1, offset 6 -> slot 22;
    # with blocks [1, 3]: block 3, offset 6 -> slot 54
    assert list(impl.slot_mapping([3, 1], np.array([22]), 16)) == [22]
    assert list(impl.slot_mapping([1, 3], np.array([22]), 16)) == [54]


def greedy(llm, prompts, max_tokens):
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
                        use_tqdm=False)
    return [o["token_ids"] for o in outs]


@pytest.mark.readme("Build it")
def test_the_engine_on_your_block_manager_gives_the_same_tokens_with_preemption(impl, tiny_ckpt):
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(3, 512, (n,), generator=g).tolist() for n in (3, 9, 30, 50, 17)]
    kw = dict(device="cpu", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=8,
              enable_prefix_caching=False)
    want = greedy(LLM(tiny_ckpt, **kw), prompts, 20)
    llm = LLM(tiny_ckpt, block_manager_cls=impl.BlockManager, **kw)
    assert type(llm.block_manager) is impl.BlockManager
    assert greedy(llm, prompts, 20) == want
    assert llm.stats()["num_preemptions"] > 0, "the pool was meant to be too small for everyone at once"
    bm = llm.block_manager
    assert bm.num_used_blocks == 0 and all(b.ref_count == 0 for b in bm.blocks), "blocks leaked"
