"""Reference for lesson 13: aios's block manager (aios/engine/block_manager.py: hash_block,
BlockManager.match_prefix, register_computed_blocks, free, _take_free_block); the scheduler calls
them in aios/engine/scheduler.py (admission, and register_computed_blocks as each prefill chunk
joins the batch) and aios/engine/request_lifecycle.py (postprocess)."""

from aios.engine.block_manager import BlockManager, hash_block

__all__ = ["BlockManager", "hash_block"]
