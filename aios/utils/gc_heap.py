"""The start-up heap, frozen: Python's full garbage collections stop scanning what start-up built.

CPython's cyclic collector scans every tracked object of a generation. After an engine starts, the
oldest generation holds its start-up heap: torch, transformers, the model's modules, the tokenizer,
~230,000 objects in a CPU engine of the bundled model, which a full collection takes ~70 ms to scan
on this repo's 2-core CI machine. The collector runs one whenever enough long-lived objects have
piled up (finished requests, their outputs), in the middle of whatever step is running: a decode
step of ~1 ms then takes tens of ms, which is what a server's inter-token p99 shows.
`gc.freeze()` moves every object then alive into a permanent generation that no collection scans,
so later full collections scan only what was allocated since. vLLM does the same after start-up
(`freeze_gc_heap` in its EngineCore).

Invariants:
- Only objects alive at the freeze are frozen: the heap is collected first, so no garbage is kept.
- A frozen object that becomes cyclic garbage is not freed until the heap is unfrozen. So each
  freeze unfreezes first (garbage frozen by an earlier engine of the same process is collected
  then), and `LLMEngine.close()` unfreezes: at most the heap alive at the latest start-up is held.
- The GC is process-wide state: the freeze is one call at the end of a start-up, in the process that
  owns the engine (`Config.freeze_gc_heap`, on by default), never a module-level side effect.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Unfreeze, collect every generation, then freeze what is alive; return how many objects are frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze_heap() -> None:
    """Return the frozen objects to the oldest generation, where collections see them again."""
    gc.unfreeze()
