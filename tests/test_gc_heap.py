"""The start-up heap freeze (aios/utils/gc_heap.py): what it holds, what it lets go, who does it."""

import gc
import weakref

import pytest

from aios import LLM, SamplingParams
from aios.utils.gc_heap import freeze_startup_heap, unfreeze_heap


class Node:
    def __init__(self) -> None:
        self.me = self                        # a reference cycle: only the cyclic GC frees it


def test_a_frozen_cycle_survives_collections_until_the_next_freeze_collects_it():
    gc.unfreeze()
    node = Node()
    alive = weakref.ref(node)
    assert freeze_startup_heap() > 0
    del node
    gc.collect()
    assert alive() is not None                # frozen: no collection scans it
    freeze_startup_heap()                     # unfreezes first, so the garbage goes before the freeze
    assert alive() is None


def test_garbage_at_the_freeze_is_collected_not_frozen():
    gc.unfreeze()
    node = Node()
    alive = weakref.ref(node)
    del node                                  # garbage already, uncollected
    freeze_startup_heap()
    assert alive() is None


def test_unfreeze_heap_returns_frozen_objects_to_the_collector():
    node = Node()
    alive = weakref.ref(node)
    freeze_startup_heap()
    del node
    unfreeze_heap()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None


def test_the_engine_freezes_its_start_up_heap_and_close_unfreezes_it(tiny_ckpt):
    gc.unfreeze()
    llm = LLM(tiny_ckpt, device="cpu")
    frozen = gc.get_freeze_count()
    assert frozen > 1000                      # torch, transformers, the model: start-up's whole heap
    [out] = llm.generate([[1, 2, 3]], SamplingParams(max_tokens=4, ignore_eos=True))  # it serves, frozen
    assert len(out["token_ids"]) == 4
    llm.close()
    assert gc.get_freeze_count() == 0


def test_freeze_gc_heap_false_leaves_the_collector_alone(tiny_ckpt):
    gc.unfreeze()
    llm = LLM(tiny_ckpt, device="cpu", freeze_gc_heap=False)
    assert gc.get_freeze_count() == 0
    llm.close()


@pytest.mark.parametrize("value", [1, "yes", None])
def test_freeze_gc_heap_must_be_a_bool(tiny_ckpt, value):
    with pytest.raises(ValueError, match="freeze_gc_heap must be True or False"):
        LLM(tiny_ckpt, device="cpu", freeze_gc_heap=value)
