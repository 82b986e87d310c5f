"""Prefill steps with no cached K/V attend over the step's own packed K/V (aios/kernels/varlen_attention.py).

- The reference computes what the paged reference computes on fresh prompts, GQA included.
- An Attention layer without a window takes the backend's `varlen_attention` on a step with no
  cached K/V and only there; the engine marks the steps (chunked prefill, prefix hits and decode
  rows have cached K/V), gives HF's greedy tokens through it, and warms up the paged kernel anyway.
- On a GPU: cuDNN's attention against the reference at real sizes, and the engine in bf16 picks it
  and computes the logits the paged Triton kernel computes.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from aios import LLM, SamplingParams
from aios.kernels import prefill_attention_ref
from aios.kernels.varlen_attention import varlen_attention, varlen_attention_ref
from aios.layers.attention import Attention
from aios.layers.backend import TORCH_ATTENTION, Backend, cudnn_varlen_available
from aios.layers.rotary_embedding import RotaryEmbedding
from aios.utils.context import Context
from helpers import assert_no_leaked_blocks, greedy, hf_greedy, random_prompts

I32 = dict(dtype=torch.int32)


def packed_fresh_batch(lengths, num_heads, num_kv_heads, head_dim, dtype, device="cpu", seed=0):
    """q, k, v packed by sequence, and the same K/V scattered into a paged cache in shuffled blocks."""
    gen = torch.Generator().manual_seed(seed)
    total, block_size = sum(lengths), 16
    q = torch.randn(total, num_heads, head_dim, generator=gen)
    k, v = (torch.randn(total, num_kv_heads, head_dim, generator=gen) for _ in range(2))
    blocks = [-(-n // block_size) for n in lengths]
    order = torch.randperm(sum(blocks), generator=gen)
    block_tables = torch.full((len(lengths), max(blocks)), -1, **I32)
    k_cache = torch.zeros(sum(blocks), block_size, num_kv_heads, head_dim)
    v_cache = torch.zeros_like(k_cache)
    first, start = 0, 0
    for s, (n, b) in enumerate(zip(lengths, blocks)):
        block_tables[s, :b] = order[first:first + b]
        for p in range(n):
            blk, off = block_tables[s, p // block_size], p % block_size
            k_cache[blk, off], v_cache[blk, off] = k[start + p], v[start + p]
        first, start = first + b, start + n
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], **I32)
    to = dict(device=device)
    return (q.to(dtype).to(**to), k.to(dtype).to(**to), v.to(dtype).to(**to), cu.to(**to),
            k_cache.to(dtype).to(**to), v_cache.to(dtype).to(**to), block_tables.to(**to))


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (8, 1)])
def test_varlen_ref_equals_the_paged_ref_on_fresh_prompts(heads):
    lengths = [1, 17, 40, 33]
    q, k, v, cu, k_cache, v_cache, block_tables = packed_fresh_batch(lengths, *heads, 32, torch.float32)
    scale = 32 ** -0.5
    got = varlen_attention_ref(q, k, v, cu, max(lengths), scale)
    want = prefill_attention_ref(q, k_cache, v_cache, cu, cu, max(lengths), max(lengths), block_tables, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class Spy:
    """A varlen_attention that counts its calls and runs the reference."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return varlen_attention_ref(*args, **kwargs)


def test_an_attention_layer_takes_varlen_attention_on_steps_without_cached_kv_only():
    spy = Spy()
    num_heads, num_kv_heads, head_dim, block_size = 4, 2, 32, 16
    rope = RotaryEmbedding(head_dim, 128, 10000.0)
    paged = Attention(num_heads, num_kv_heads, head_dim, head_dim ** -0.5, rope, Backend(TORCH_ATTENTION))
    packed = Attention(num_heads, num_kv_heads, head_dim, head_dim ** -0.5, rope,
                       Backend(replace(TORCH_ATTENTION, varlen_attention=spy)))
    windowed = Attention(num_heads, num_kv_heads, head_dim, head_dim ** -0.5, rope,
                         Backend(replace(TORCH_ATTENTION, varlen_attention=spy)), sliding_window=6)
    lengths = [20, 3, 35]
    total = sum(lengths)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(total, num_heads, head_dim, generator=gen)
    k, v = (torch.randn(total, num_kv_heads, head_dim, generator=gen) for _ in range(2))
    block_tables = torch.tensor([[5, 1, -1], [0, -1, -1], [2, 7, 3]], **I32)   # not in order: the slots are read
    positions = torch.cat([torch.arange(n) for n in lengths])
    owner = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    slots = block_tables[owner, positions // block_size].long() * block_size + positions % block_size
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], **I32)
    fresh = Context(is_prefill=True, slot_mapping=slots, block_tables=block_tables,
                    context_lens=torch.tensor(lengths, **I32), cu_seqlens_q=cu, cu_seqlens_k=cu,
                    max_seqlen_q=max(lengths), max_seqlen_k=max(lengths), has_cached_kv=False)
    outs = []
    for layer in (paged, packed):
        layer.k_cache = torch.zeros(8, block_size, num_kv_heads, head_dim)
        layer.v_cache = torch.zeros(8, block_size, num_kv_heads, head_dim)
        outs.append(layer(q, k, v, positions, fresh))
    assert spy.calls == 1
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    # the same tokens again as a step that attends to cached K/V: the paged kernel, never the packed one
    packed(q, k, v, positions, replace(fresh, has_cached_kv=True))
    assert spy.calls == 1
    # varlen_attention has no window: a windowed layer attends with the paged kernel even when fresh
    windowed.k_cache, windowed.v_cache = torch.zeros_like(paged.k_cache), torch.zeros_like(paged.v_cache)
    windowed(q, k, v, positions, fresh)
    assert spy.calls == 1 and windowed.attn_backend.varlen_attention is None


def test_the_engine_runs_varlen_attention_on_fresh_prefills_only_and_gives_hf_tokens(tiny_ckpt):
    spy = Spy()
    prompts = random_prompts(512, [20, 60, 33, 17], seed=8)
    want = hf_greedy(tiny_ckpt, prompts, 12)
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, max_num_batched_tokens=64,
              backend=Backend(replace(TORCH_ATTENTION, varlen_attention=spy)))
    seen: list[bool] = []
    forward = llm.model_runner.model.forward

    def record(input_ids, positions, context):
        seen.append(context.has_cached_kv)
        return forward(input_ids, positions, context)

    llm.model_runner.model.forward = record
    assert greedy(llm, prompts, 12) == want
    assert spy.calls == sum(1 for has_cached in seen if not has_cached) * llm.config.hf_config.num_hidden_layers
    # the first step (20 + 44 tokens, both fresh) has none; the 60-token prompt's second chunk has cached K/V
    assert seen[0] is False and True in seen
    calls = spy.calls
    assert greedy(llm, prompts, 12) == want             # a second pass hits the prefix cache: no fresh prompt
    assert spy.calls == calls
    assert_no_leaked_blocks(llm)


def test_warm_up_runs_every_prefill_length_fresh_and_after_a_cached_token(tiny_ckpt, monkeypatch):
    """A backend with varlen_attention takes fresh prompts away from the paged kernel: warm-up must
    still run the paged kernel at every length, or its first chunked / prefix-hit step compiles it."""
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kvcache_block_size=16, max_model_len=64,
              max_num_batched_tokens=64)
    runner, steps = llm.model_runner, []
    execute = runner.execute
    monkeypatch.setattr(runner, "execute", lambda inputs, *a, **k: steps.append(inputs) or execute(inputs, *a, **k))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)     # a GPU-only method, run on CPU
    runner.warm_up()
    fresh = [(s.context_lens == np.diff(s.cu_seqlens_q)).all() for s in steps]
    assert [int(s.max_seqlen_q) for s, f in zip(steps, fresh) if f] == [2, 4, 8, 16, 32, 64]
    assert [(int(s.max_seqlen_q), int(s.positions[0])) for s, f in zip(steps, fresh) if not f] == [
        (2, 1), (4, 1), (8, 1), (16, 1), (32, 1), (63, 1)]                  # 1 + 63 = max_model_len
    for s in steps:            # every slot inside the sequence's own blocks
        assert (s.slot_mapping >= 0).all() and (s.slot_mapping < 16 * (s.block_tables >= 0).sum()).all()


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads", [(16, 8), (32, 8), (8, 8)])
def test_cudnn_varlen_attention_matches_the_ref_at_real_sizes(head_dim, heads):
    lengths = [1024, 1, 700, 129, 2048]
    q, k, v, cu, *_ = packed_fresh_batch(lengths, *heads, head_dim, torch.bfloat16, device="cuda")
    assert cudnn_varlen_available("cuda", torch.bfloat16) and not cudnn_varlen_available("cuda", torch.float32)
    got = varlen_attention(q, k, v, cu, max(lengths), head_dim ** -0.5)
    want = varlen_attention_ref(q, k, v, cu, max(lengths), head_dim ** -0.5)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
def test_the_engine_in_bf16_prefills_fresh_prompts_with_cudnn_and_matches_the_paged_kernel(tiny_ckpt):
    prompts = random_prompts(512, [5, 40, 100, 7, 64], seed=24)
    logits, engines = [], []
    for cudnn in (True, False):
        llm = LLM(tiny_ckpt, device="cuda", dtype="bfloat16", kvcache_block_size=16, max_model_len=512,
                  num_kvcache_blocks=256, cudnn_prefill=cudnn)
        layers = [m for m in llm.model_runner.model.modules() if isinstance(m, Attention)]
        assert all((a.attn_backend.varlen_attention is not None) == cudnn for a in layers)
        for p in prompts:
            llm.add_request(p, SamplingParams(temperature=0, max_tokens=4))
        batch = llm.scheduler.schedule()
        inputs = llm.model_runner.prepare_inputs(batch)
        assert inputs.is_prefill and len(batch) == len(prompts)
        logits.append(llm.model_runner.execute(inputs).float())
        engines.append(llm)
    assert (logits[0] - logits[1]).abs().max().item() < 0.05 * logits[1].abs().max().item()
    for llm in engines:
        llm.close()
