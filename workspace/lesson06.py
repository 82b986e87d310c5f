"""Lesson 06: the paged KV cache. A block allocator with reference counts, and the slot mapping.

Your `BlockManager` keeps aios's state (self.blocks: a `Block` per physical block, with its
`ref_count`; self.free_block_ids: an OrderedDict of the free block ids, oldest first) and its
prefix-cache methods (lesson 13; the check runs with enable_prefix_caching=False, so they never hit).
You write how blocks are counted, handed out and given back.
Check: python lessons/check.py 06        Demo: python lessons/06_paged_kv_cache/run_lesson06.py --mine
"""

from __future__ import annotations

import numpy as np

from aios.engine import block_manager
from aios.engine.sequence import Sequence


class BlockManager(block_manager.BlockManager):
    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks seq needs so that its first num_tokens tokens all have a slot: the blocks
        num_tokens tokens fill (a partly filled block counts) minus the ones seq.block_table already
        holds; never negative. (lessons/06_paged_kv_cache/README.md, "Build it")"""
        raise NotImplementedError("lesson 06: blocks_needed (see README, 'Build it')")

    def allocate(self, seq: Sequence, num_new_tokens: int) -> int:
        """Give seq slots for tokens [seq.num_computed_tokens, seq.num_computed_tokens + num_new_tokens);
        return how many of those num_new_tokens got a slot.

        Append fresh blocks to seq.block_table, taken from the front of self.free_block_ids (each
        taken block leaves the free list and gets ref_count 1; a taken block's stale prefix hash, if
        any, must go: self._take_free_block() does both). When the pool is short, take what is free
        and return fewer (0 when nothing fits): the scheduler schedules only the tokens that got a
        slot, and preempts someone when it gets 0."""
        raise NotImplementedError("lesson 06: allocate (see README, 'Build it')")

    def free(self, seq: Sequence) -> None:
        """Release seq's blocks: ref_count - 1 on each; a block whose count reaches 0 goes back into
        self.free_block_ids (at the front when it holds no prefix hash, block.hash == -1, so it is
        handed out first). Then seq.block_table = [] and seq.block_hashes = []. A block freed with
        ref_count 0 already is a bug: raise (assert)."""
        raise NotImplementedError("lesson 06: free (see README, 'Build it')")


def slot_mapping(block_table: list[int], positions: np.ndarray, block_size: int) -> np.ndarray:
    """The flat cache slot of each position of one sequence (int64, same length as positions):
    the token at position p lives in physical block block_table[p // block_size], at offset
    p % block_size, so its slot is block_table[p // block_size] * block_size + p % block_size.
    Vectorized: no Python loop over positions."""
    raise NotImplementedError("lesson 06: slot_mapping (see README, 'Build it')")
