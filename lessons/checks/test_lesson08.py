"""Lesson 08: one scheduling step under a token budget (decodes first, prefill chunks, preemption),
then the real engine on your scheduler under small budgets and a small KV pool."""

import pytest
import torch

from aios import LLM, Config, SamplingParams
from aios.engine.block_manager import BlockManager
from aios.engine.sequence import Sequence, SequenceStatus
from aios.engine.stop_checker import StopChecker

LESSON = "08"
BLOCK = 4


def make(impl, tiny_ckpt, budget=8, max_num_seqs=4, num_blocks=32):
    config = Config(tiny_ckpt, device="cpu", max_num_batched_tokens=budget, max_num_seqs=max_num_seqs,
                    kvcache_block_size=BLOCK, enable_prefix_caching=False)
    bm = BlockManager(num_blocks, BLOCK, enable_prefix_caching=False)
    return impl.Scheduler(config, bm, StopChecker([], config.max_model_len))


def request(sched, n, seq_id, max_tokens=50):
    seq = Sequence(seq_id, list(range(3, 3 + n)), SamplingParams(temperature=0.0, max_tokens=max_tokens), BLOCK)
    sched.add(seq)
    return seq


def run_step(sched):
    """Schedule, launch, and hand back a token for every sequence that sampled."""
    batch = sched.schedule()
    step = sched.launched(batch, None)
    sched.postprocess(step, [7] * len(step.sampled))
    return batch


def chunks(batch):
    return {s.seq_id: n for s, n in zip(batch.seqs, batch.num_new_tokens)}


@pytest.mark.readme("Build it: the token budget")
def test_a_long_prompt_is_chunked_under_the_budget(impl, tiny_ckpt):
    sched = make(impl, tiny_ckpt, budget=8)
    seq = request(sched, 20, 0)
    assert chunks(run_step(sched)) == {0: 8}
    assert chunks(run_step(sched)) == {0: 8}
    assert chunks(run_step(sched)) == {0: 4}         # the last 4: this chunk samples
    assert chunks(run_step(sched)) == {0: 1}         # then a decode
    assert seq.status == SequenceStatus.RUNNING


@pytest.mark.readme("Build it: decodes first")
def test_decodes_go_first_and_a_prefill_chunk_takes_what_is_left(impl, tiny_ckpt):
    sched = make(impl, tiny_ckpt, budget=8)
    request(sched, 3, 0)
    request(sched, 2, 1)
    assert chunks(run_step(sched)) == {0: 3, 1: 2}   # both prompts, first come first served
    request(sched, 30, 2)
    batch = run_step(sched)
    assert chunks(batch) == {0: 1, 1: 1, 2: 6}       # two decodes, then 6 of the new prompt's 30
    assert [s.seq_id for s in batch.seqs] == [0, 1, 2]


@pytest.mark.readme("Build it: the token budget")
def test_max_num_seqs_caps_the_batch(impl, tiny_ckpt):
    sched = make(impl, tiny_ckpt, budget=64, max_num_seqs=2)
    for i in range(4):
        request(sched, 3, i)
    batch = run_step(sched)
    assert chunks(batch) == {0: 3, 1: 3}
    assert [s.seq_id for s in sched.waiting] == [2, 3]


@pytest.mark.readme("Build it: preemption")
def test_out_of_blocks_preempts_the_newest_and_requeues_it_first(impl, tiny_ckpt):
    sched = make(impl, tiny_ckpt, budget=16, num_blocks=2)
    a, b = request(sched, 4, 0), request(sched, 4, 1)
    assert chunks(run_step(sched)) == {0: 4, 1: 4}   # one full block each: the pool is empty
    c = request(sched, 3, 2)
    batch = run_step(sched)                          # a's decode needs a block: b gives its own back
    assert chunks(batch) == {0: 1}
    assert b.status == SequenceStatus.WAITING and b.block_table == [] and b.num_computed_tokens == 0
    assert list(sched.waiting) == [b, c], "the preempted sequence goes back to the front of the queue"
    assert sched.num_preemptions == 1 and a.status == SequenceStatus.RUNNING
    sched.check_invariants()


@pytest.mark.readme("Build it: preemption")
def test_a_sequence_that_cannot_grow_preempts_itself(impl, tiny_ckpt):
    sched = make(impl, tiny_ckpt, budget=16, num_blocks=1)
    a = request(sched, 4, 0)
    run_step(sched)
    batch = run_step(sched)                          # a needs a second block, and it is the newest
    assert len(batch) == 0 and a.status == SequenceStatus.WAITING and a.block_table == []
    sched.check_invariants()


def greedy(llm, prompts, max_tokens):
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
                        use_tqdm=False)
    return [o["token_ids"] for o in outs]


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("kw", [dict(max_num_batched_tokens=7, max_num_seqs=3),
                                dict(max_num_batched_tokens=16, num_kvcache_blocks=8),
                                dict(max_num_batched_tokens=9, num_kvcache_blocks=6, max_num_seqs=2)],
                         ids=["budget 7", "budget 16, 8 blocks", "budget 9, 6 blocks, 2 seqs"])
def test_the_engine_on_your_scheduler_gives_the_same_tokens(impl, tiny_ckpt, kw):
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(3, 512, (n,), generator=g).tolist() for n in (3, 9, 30, 50, 17)]
    kw = dict(device="cpu", dtype="float32", kvcache_block_size=16, enable_prefix_caching=False, **kw)
    want = greedy(LLM(tiny_ckpt, **kw), prompts, 16)

    class Checked(impl.Scheduler):
        def schedule(self):
            batch = super().schedule()
            assert batch.num_tokens <= self.max_num_batched_tokens, f"{batch.num_tokens} tokens over the budget"
            assert len(batch) <= self.max_num_seqs, f"{len(batch)} sequences over max_num_seqs"
            assert all(n > 0 for n in batch.num_new_tokens), "a chunk of 0 tokens"
            self.check_invariants()
            return batch

    llm = LLM(tiny_ckpt, scheduler_cls=Checked, **kw)
    assert greedy(llm, prompts, 16) == want
    if "num_kvcache_blocks" in kw:
        assert llm.stats()["num_preemptions"] > 0, "the pool was meant to force preemption"
    assert llm.block_manager.num_used_blocks == 0, "blocks leaked"
