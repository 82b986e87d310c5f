"""The engine's seams: a block manager, a scheduler, an attention backend, a sampler and a weight
loader passed at construction drive the real engine (what lessons/check.py plugs a learner's piece
into), and the tokens stay the reference engine's."""

from aios import LLM
from aios.engine.block_manager import BlockManager
from aios.engine.scheduler import Scheduler
from aios.layers.backend import TORCH_ATTENTION, AttentionBackend, Backend
from aios.layers.sampler import Sampler
from aios.utils.loader import load_model
from helpers import assert_no_leaked_blocks, greedy, random_prompts


def test_every_seam_takes_its_piece_and_the_tokens_stay_the_same(tiny_ckpt):
    prompts = random_prompts(512, [5, 17, 30], seed=9)
    want = greedy(LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16), prompts, 8)
    calls = {"allocate": 0, "schedule": 0, "attention": 0, "sample": 0, "load": 0}

    class CountingBlockManager(BlockManager):
        def allocate(self, seq, num_new_tokens):
            calls["allocate"] += 1
            return super().allocate(seq, num_new_tokens)

    class CountingScheduler(Scheduler):
        def schedule(self):
            calls["schedule"] += 1
            return super().schedule()

    def decode(*args, **kwargs):
        calls["attention"] += 1
        return TORCH_ATTENTION.decode_attention(*args, **kwargs)

    class CountingSampler(Sampler):
        def forward(self, logits, t):
            calls["sample"] += 1
            return super().forward(logits, t)

    def loader(model, path):
        calls["load"] += 1
        load_model(model, path)

    attention = AttentionBackend("mine", TORCH_ATTENTION.store_kvcache, TORCH_ATTENTION.prefill_attention, decode)
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16,
              block_manager_cls=CountingBlockManager, scheduler_cls=CountingScheduler,
              backend=Backend(attention, fused_kernels=False), sampler=CountingSampler(), weight_loader=loader)
    assert greedy(llm, prompts, 8) == want
    assert all(calls.values()), calls
    assert_no_leaked_blocks(llm)
