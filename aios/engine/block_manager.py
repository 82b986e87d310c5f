"""Paged KV-cache bookkeeping: which physical block holds which tokens of which sequence
(lesson 06), and hash-chain prefix caching over those blocks (lesson 13).

Invariants (tests/test_block_manager.py and tests/test_prefix_stress.py check them):
- A block is free (ref_count == 0, in free_block_ids) or used (ref_count >= 1), never both.
- ref_count of a block = number of sequences whose block_table holds it (a fork adds one per
  block for the new sample; a prefix hit one per hit block; free and copy-on-write take one off).
- seq.block_table[i] holds tokens [i * block_size, (i + 1) * block_size) of seq.
- A step writes K/V only into blocks its sequence holds alone (ref_count == 1) and the prefix
  cache does not hold, or into the full blocks its chunk completes: the scheduler entered those
  into the cache as it scheduled the chunk, and a sequence admitted later in the same schedule may
  share them already (it reads them only: its own chunk starts after them). Any other shared block
  is full and read-only (prefix hits), or the last, partly filled block of a forked prompt, which
  each sample but the last to write copies first (copy_on_write; the model runner copies the K/V
  before the step's forward).
- A block is in hash_to_block only if its tokens are known (never a block that still holds a
  PLACEHOLDER) and the step that fills it is scheduled or launched: the scheduler registers the
  full blocks of each prefill chunk right after adding it to the batch (vLLM's cache_blocks at
  allocation), and the rest (blocks filled by decodes) when it reads a step's tokens or just before
  it frees a finishing sequence. A scheduled step is launched in the same LLMEngine.step; if its
  launch raises, unregister_uncomputed_blocks takes out the blocks it was to fill.
- A hit never reads unwritten slots: within one step, every layer stores all of the step's K/V
  (slot_mapping) before its attention reads the cache (layers/attention.py, both backends, prefill
  and decode, on every TP rank), so a sequence that hits a block its own step fills reads it after
  the write; later steps run after it on the same stream.
- seq.block_hashes covers at most seq's first num_computed_tokens // block_size blocks, except
  between schedule() and the launch, when it also covers the full blocks of the scheduled chunk.
- Of a Sequence, the block manager writes block_table and block_hashes, nothing else.
- A freed block keeps its hash and contents until it is handed out again (lazy eviction); free
  blocks are reused least-recently-freed first, blocks with no hash before any cached block.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import xxhash

from aios.engine.sequence import PLACEHOLDER, Sequence


def hash_block(token_ids: list[int], prev_hash: int) -> int:
    """Chain hash: block i's hash covers every token of blocks 0..i."""
    h = xxhash.xxh64()
    h.update(prev_hash.to_bytes(8, "little", signed=True))
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return h.intdigest() & 0x7FFF_FFFF_FFFF_FFFF


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "prev_hash", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash = -1                       # -1: not in the prefix cache
        # kept to guard against hash collisions: a hit needs equal tokens at an equal chain position
        self.prev_hash = -1
        self.token_ids: list[int] = []


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_block: dict[int, int] = {}
        # counters, kept by the scheduler at admission and reported by the engine
        self.num_prefix_queries = 0          # prompt tokens looked up in the prefix cache
        self.num_prefix_hits = 0             # of those, tokens served from the cache

    # ---- state ---------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free_block_ids)

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.num_prefix_hits / self.num_prefix_queries if self.num_prefix_queries else 0.0

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks seq needs so that its first num_tokens tokens all have a slot."""
        need = (num_tokens + self.block_size - 1) // self.block_size
        return max(0, need - len(seq.block_table))

    # ---- allocation ----------------------------------------------------------------------------

    def _take_free_block(self) -> int:
        block_id, _ = self.free_block_ids.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash != -1:                 # evict: its cached contents are about to be overwritten
            if self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]
            block.hash = block.prev_hash = -1
            block.token_ids = []
        block.ref_count = 1
        return block_id

    def _acquire(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_block_ids[block_id]
        block.ref_count += 1

    def match_prefix(self, seq: Sequence) -> tuple[list[int], list[int]]:
        """Cached blocks that hold seq's leading full blocks: (block ids, their chain hashes).

        Only blocks that end before seq's last token count, so at least one token is always left
        to compute (its logits are what the next token is sampled from)."""
        if not self.enable_prefix_caching:
            return [], []
        block_ids, hashes = [], []
        prev = -1
        for i in range((len(seq) - 1) // self.block_size):
            token_ids = seq.block_token_ids(i)
            h = hash_block(token_ids, prev)
            block_id = self.hash_to_block.get(h)
            if (block_id is None or self.blocks[block_id].token_ids != token_ids
                    or self.blocks[block_id].prev_hash != prev):
                break
            block_ids.append(block_id)
            hashes.append(h)
            prev = h
        return block_ids, hashes

    def allocate_cached_prefix(self, seq: Sequence) -> int:
        """Give a sequence with no blocks the cached blocks of its leading full blocks (ref count + 1
        on each); return how many tokens they hold (the scheduler skips computing them)."""
        assert not seq.block_table, "only a sequence without blocks looks up the prefix cache"
        hit_ids, hit_hashes = self.match_prefix(seq)
        for block_id in hit_ids:
            self._acquire(block_id)
        seq.block_table = list(hit_ids)
        seq.block_hashes = list(hit_hashes)
        return len(hit_ids) * self.block_size

    def allocate(self, seq: Sequence, num_new_tokens: int) -> int:
        """Give seq slots for its next tokens; return how many of num_new_tokens got slots.

        The tokens are [num_computed_tokens, num_computed_tokens + num_new_tokens); seq takes as
        many fresh blocks as are free, up to what they need; the caller schedules only the tokens
        that got slots."""
        target = seq.num_computed_tokens + num_new_tokens
        have = len(seq.block_table) * self.block_size + self.num_free_blocks * self.block_size
        target = min(target, have)
        for _ in range(self.blocks_needed(seq, target)):
            seq.block_table.append(self._take_free_block())
        return max(0, target - seq.num_computed_tokens)

    # ---- forks (n samples of one prompt) ------------------------------------------------------

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """child shares every block of parent: the K/V of the prompt is computed once for all samples."""
        assert not child.block_table, "a forked sequence starts without blocks"
        for block_id in parent.block_table:
            self.blocks[block_id].ref_count += 1
        child.block_table = list(parent.block_table)
        child.block_hashes = list(parent.block_hashes)

    def needs_copy_on_write(self, seq: Sequence) -> bool:
        """The block seq's next token (num_computed_tokens) goes into exists and is shared."""
        i = seq.num_computed_tokens // self.block_size
        return i < len(seq.block_table) and self.blocks[seq.block_table[i]].ref_count > 1

    def copy_on_write(self, seq: Sequence) -> tuple[int, int]:
        """Give seq a block of its own in place of the shared one its next token goes into; return
        (shared block, new block): the caller has that K/V copied before the step writes. Needs
        needs_copy_on_write(seq) and a free block."""
        i = seq.num_computed_tokens // self.block_size
        src = seq.block_table[i]
        assert self.blocks[src].ref_count > 1 and self.num_free_blocks > 0
        dst = self._take_free_block()
        self.blocks[src].ref_count -= 1      # still >= 1: another sample holds it
        seq.block_table[i] = dst
        return src, dst

    def free(self, seq: Sequence) -> None:
        """Release seq's blocks (in reverse, so a chain's tail is evicted before its head)."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            assert block.ref_count > 0, f"double free of block {block_id}"
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_block_ids[block_id] = None
                if block.hash == -1:         # nothing cached here: hand it out first
                    self.free_block_ids.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.block_hashes = []

    # ---- prefix cache --------------------------------------------------------------------------

    def register_computed_blocks(self, seq: Sequence, num_tokens: int | None = None) -> None:
        """Enter every full block among seq's first num_tokens tokens (default: its computed ones)
        into the cache, as far as their tokens are known. The scheduler passes num_computed_tokens +
        the chunk it has just scheduled: the step it is building writes those blocks' K/V before
        anything reads them (the module docstring), so a sequence admitted after it hits them."""
        if not self.enable_prefix_caching:
            return
        if num_tokens is None:
            num_tokens = seq.num_computed_tokens
        num_full = min(num_tokens // self.block_size, len(seq.block_table))
        prev = seq.block_hashes[-1] if seq.block_hashes else -1
        for i in range(len(seq.block_hashes), num_full):
            token_ids = seq.block_token_ids(i)
            if PLACEHOLDER in token_ids:     # a token still on the device: registered once it is read
                break
            h = hash_block(token_ids, prev)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.hash_to_block and block.hash == -1:
                # A duplicate (same prefix computed by two sequences in one step) stays unregistered.
                block.hash, block.prev_hash = h, prev
                block.token_ids = token_ids
                self.hash_to_block[h] = block.block_id
            prev = h

    def unregister_uncomputed_blocks(self, seq: Sequence) -> None:
        """Take seq's blocks past its num_computed_tokens out of the cache: the step whose chunk was
        to fill them was scheduled (and registered them) but its launch failed, so their K/V will
        never be written. A duplicate that seq left unregistered keeps the other block's entry."""
        num_full = seq.num_computed_tokens // self.block_size
        for i in range(num_full, len(seq.block_hashes)):
            block = self.blocks[seq.block_table[i]]
            if block.hash == seq.block_hashes[i]:
                if self.hash_to_block.get(block.hash) == block.block_id:
                    del self.hash_to_block[block.hash]
                block.hash = block.prev_hash = -1
                block.token_ids = []
        del seq.block_hashes[num_full:]

    def reset_prefix_cache(self) -> None:
        for block in self.blocks:
            block.hash = block.prev_hash = -1
            block.token_ids = []
        self.hash_to_block.clear()
