"""Reference for lesson 06: aios's own block manager (aios/engine/block_manager.py: blocks_needed,
allocate, free) and the slot mapping of aios/engine/step_inputs.py's build_step_inputs."""

from __future__ import annotations

import numpy as np

from aios.engine.block_manager import BlockManager
from aios.engine.step_inputs import build_step_inputs

__all__ = ["BlockManager", "slot_mapping"]


def slot_mapping(block_table: list[int], positions: np.ndarray, block_size: int) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.int64)
    start, n = int(positions[0]), len(positions)
    assert (positions == np.arange(start, start + n)).all(), "the adapter takes one contiguous span"
    inputs = build_step_inputs(np.zeros(n, np.int64), np.array([start]), np.array([n]),
                               np.asarray([block_table], dtype=np.int32), np.array([n - 1]), block_size)
    return inputs.slot_mapping
