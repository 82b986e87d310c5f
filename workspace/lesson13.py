"""Lesson 13: prefix caching. A hash chain over full blocks, a guard against hash collisions, and
least-recently-freed reuse of the blocks that still hold cached K/V.

Your BlockManager is aios's (aios/engine/block_manager.py: allocate, allocate_cached_prefix, the
Block objects, the counters) with the four prefix-cache methods left to you. The state they share:
    self.blocks[i]          a Block: ref_count, hash (-1: not cached), prev_hash, token_ids
    self.free_block_ids     an OrderedDict {block id: None}; the FRONT is handed out next
    self.hash_to_block      {chain hash: block id} of every cached block
    seq.block_table         seq's block ids; seq.block_hashes: the chain hashes of its leading
                            full blocks, as far as they are known
Check: python lessons/check.py 13    Demo: python lessons/13_prefix_caching/run_lesson13.py --mine
"""

from __future__ import annotations

from aios.engine.block_manager import BlockManager as _AiosBlockManager
from aios.engine.sequence import PLACEHOLDER, Sequence  # noqa: F401  (PLACEHOLDER: a token still on the GPU)


def hash_block(token_ids: list[int], prev_hash: int) -> int:
    """The chain hash of one full block: a hash of (prev_hash, the block's token ids), so block i's
    hash stands for every token of blocks 0..i. The first block's prev_hash is -1. Return a
    non-negative int below 2**63 (mask it). Any good 64-bit hash will do (aios uses xxhash.xxh64
    over prev_hash's 8 bytes, then the tokens as int64 bytes); Python's hash() of a tuple works too.
    (lessons/13_prefix_caching/README.md, "Build it: the hash chain")"""
    raise NotImplementedError("lesson 13: hash_block (see README, 'Build it')")


class BlockManager(_AiosBlockManager):
    def match_prefix(self, seq: Sequence) -> tuple[list[int], list[int]]:
        """The cached blocks holding seq's leading full blocks: (block ids, their chain hashes).

        Walk blocks i = 0, 1, ... of seq, but only those that end before seq's last token
        ((len(seq) - 1) // block_size of them: one token is always left to compute, its logits
        sample the next token). Chain each block's hash from the previous one's (-1 first); stop
        at the first block whose hash is not in hash_to_block, or whose cached Block does not hold
        exactly these token_ids with this prev_hash (the collision guard: equal hashes are not
        proof of equal tokens). Nothing when self.enable_prefix_caching is False.
        (README, "Build it: matching a prefix")"""
        raise NotImplementedError("lesson 13: BlockManager.match_prefix (see README, 'Build it')")

    def register_computed_blocks(self, seq: Sequence, num_tokens: int | None = None) -> None:
        """Enter every full block among seq's first num_tokens tokens into the cache.

        num_tokens defaults to seq.num_computed_tokens (after a step: the blocks now computed). The
        scheduler also calls it with num_computed_tokens + the chunk it has just added to the batch,
        before the step runs, so that a request admitted later in the same step hits the blocks
        that step is about to fill. The blocks are the first min(num_tokens // block_size,
        len(seq.block_table)); those before len(seq.block_hashes) are done already. For each new
        one: stop at a block holding a PLACEHOLDER (its token is still on the GPU); else hash it
        (chained from the last of seq.block_hashes), append the hash to seq.block_hashes, and if
        the hash is not cached yet and the block holds no hash, record hash, prev_hash and a copy
        of its token_ids on the Block and map hash_to_block[hash] to it. (A duplicate, the same
        prefix computed by two sequences at once, stays unregistered.) Nothing when prefix caching
        is off. (README, "Build it: registering blocks")"""
        raise NotImplementedError("lesson 13: BlockManager.register_computed_blocks (see README, 'Build it')")

    def free(self, seq: Sequence) -> None:
        """Release seq's blocks, tail first (reversed(seq.block_table)): decrement each block's
        ref_count (assert it was > 0: a double free is a bug); a block that drops to 0 goes back to
        free_block_ids, keeping its hash and contents (a later request may still hit it): at the
        END if it is cached, so it is reused last, at the FRONT if it holds no hash. Then empty
        seq.block_table and seq.block_hashes. (README, "Build it: LRU reuse")"""
        raise NotImplementedError("lesson 13: BlockManager.free (see README, 'Build it')")

    def _take_free_block(self) -> int:
        """Hand out the free block at the front of free_block_ids (ref_count becomes 1) and return its
        id. If it still holds a hash, evict it first: drop its hash_to_block entry (only if that
        entry points at this block) and reset hash, prev_hash to -1 and token_ids to [], since its
        cached K/V is about to be overwritten. (README, "Build it: LRU reuse")"""
        raise NotImplementedError("lesson 13: BlockManager._take_free_block (see README, 'Build it')")
