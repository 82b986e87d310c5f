"""Lesson 07: the flat arrays of a mixed batch (decodes and prefill chunks), against aios's own on
hand-made batches and on every batch the real scheduler forms; then the real engine run on yours."""


import numpy as np
import pytest
import torch

from aios import LLM, SamplingParams
from aios.engine import step_inputs as aios_step_inputs
from aios.engine.scheduler import Scheduler

LESSON = "07"
FIELDS = ("input_ids", "positions", "slot_mapping", "block_tables", "context_lens", "cu_seqlens_q",
          "logits_indices", "is_prefill", "max_seqlen_q", "max_seqlen_k")


def assert_same_inputs(got, want) -> None:
    for name in FIELDS:
        g, w = getattr(got, name), getattr(want, name)
        assert np.array_equal(np.asarray(g), np.asarray(w)), f"{name}: yours {np.asarray(g).tolist()}, " \
                                                             f"want {np.asarray(w).tolist()}"


def mixed_batch():
    """Two decodes (9 and 17 tokens cached), a first prefill chunk of 5 and a second chunk of 3
    (after 4 cached), blocks of 4 scattered in the pool."""
    starts = np.array([9, 0, 17, 4])
    q_lens = np.array([1, 5, 1, 3])
    block_tables = np.array([[6, 2, 11, -1, -1], [0, 7, -1, -1, -1], [3, 9, 1, 4, 12], [5, 8, -1, -1, -1]],
                            dtype=np.int32)
    input_ids = np.arange(100, 100 + q_lens.sum(), dtype=np.int64)
    logits_indices = np.array([0, 5, 6])           # the chunk of sequence 3 is not its last: no sample
    return input_ids, starts, q_lens, block_tables, logits_indices, 4


@pytest.mark.readme("Build it: build_step_inputs")
def test_build_step_inputs_of_a_mixed_batch(impl):
    got = impl.build_step_inputs(*mixed_batch())
    assert np.asarray(got.cu_seqlens_q).tolist() == [0, 1, 6, 7, 10]
    assert np.asarray(got.positions).tolist() == [9, 0, 1, 2, 3, 4, 17, 4, 5, 6]
    # position 9 of sequence 0: logical block 2 -> physical block 11, offset 1 -> slot 45
    assert np.asarray(got.slot_mapping).tolist() == [45, 0, 1, 2, 3, 28, 49, 32, 33, 34]
    assert np.asarray(got.context_lens).tolist() == [10, 5, 18, 7]
    assert got.is_prefill and got.max_seqlen_q == 5 and got.max_seqlen_k == 18
    assert_same_inputs(got, aios_step_inputs.build_step_inputs(*mixed_batch()))


@pytest.mark.readme("Build it: build_step_inputs")
def test_build_step_inputs_of_a_pure_decode_batch(impl):
    args = (np.array([5, 6, 7], np.int64), np.array([3, 0, 8]), np.array([1, 1, 1]),
            np.array([[2, -1, -1], [1, -1, -1], [4, 0, 3]], np.int32), np.array([0, 1, 2]), 4)
    got = impl.build_step_inputs(*args)
    assert not got.is_prefill and got.max_seqlen_q == 1
    assert np.asarray(got.slot_mapping).tolist() == [11, 4, 12]
    assert_same_inputs(got, aios_step_inputs.build_step_inputs(*args))


@pytest.mark.readme("Build it: cu_seqlens_k")
def test_cu_seqlens_k_is_the_prefix_sum_of_context_lens(impl):
    lens = torch.tensor([10, 5, 18, 7], dtype=torch.int32)
    got = impl.cu_seqlens_k(lens)
    assert got.dtype == torch.int32 and got.tolist() == [0, 10, 15, 33, 40]


def prompts(lengths, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 512, (n,), generator=g).tolist() for n in lengths]


ENGINE = dict(device="cpu", dtype="float32", kvcache_block_size=4, max_num_batched_tokens=12, max_num_seqs=4,
              async_scheduling=False, enable_prefix_caching=False)
PROMPT_LENS = [3, 21, 9, 30, 5, 14]


@pytest.mark.readme("Build it: prepare_step_inputs")
def test_prepare_step_inputs_on_every_batch_the_scheduler_forms(impl, tiny_ckpt):
    seen = {"mixed": 0, "steps": 0}

    class Comparing(Scheduler):
        def schedule(self):
            batch = super().schedule()
            if batch.seqs:
                want = aios_step_inputs.prepare_step_inputs(batch, self.block_manager.block_size, {})
                assert_same_inputs(impl.prepare_step_inputs(batch, self.block_manager.block_size, {}), want)
                seen["steps"] += 1
                seen["mixed"] += 1 in batch.num_new_tokens and max(batch.num_new_tokens) > 1
            return batch

    llm = LLM(tiny_ckpt, scheduler_cls=Comparing, **ENGINE)
    llm.generate(prompts(PROMPT_LENS), SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True),
                 use_tqdm=False)
    assert seen["mixed"] > 0, "no step mixed decodes and prefill chunks"


@pytest.mark.readme("Build it")
def test_the_engine_on_your_step_inputs_gives_the_same_tokens(impl, tiny_ckpt):
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    want = [o["token_ids"] for o in LLM(tiny_ckpt, **ENGINE).generate(prompts(PROMPT_LENS), params, use_tqdm=False)]
    llm = LLM(tiny_ckpt, **ENGINE)
    block_size = llm.config.kvcache_block_size
    # no seam for the step's inputs: the model runner's own prepare_inputs is replaced on this engine
    llm.model_runner.prepare_inputs = lambda batch: impl.prepare_step_inputs(batch, block_size, {})
    got = [o["token_ids"] for o in llm.generate(prompts(PROMPT_LENS), params, use_tqdm=False)]
    assert got == want


