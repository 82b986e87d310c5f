"""Sampling: seeds make a request reproducible whatever its batch; top-k/top-p/min-p restrict the
support; the one-pass Triton sampler picks the reference's tokens (under TRITON_INTERPRET on CPU)."""

import pytest
import torch

from aios import LLM, SamplingParams
from aios.kernels.sampling import gumbel_from_bits_ref, gumbel_noise_ref, sample, sample_ref, seeded_row_keys
from aios.layers.sampler import Sampler, SamplingTensors, apply_top_k_top_p_min_p
from helpers import random_prompts

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_seeded_request_samples_the_same_tokens_alone_and_in_a_batch(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32")
    p = random_prompts(512, [7], seed=1)[0]
    others = random_prompts(512, [3, 25, 11], seed=2)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=16, seed=1234, ignore_eos=True)
    alone = llm.generate([p], params, use_tqdm=False)[0]["token_ids"]
    mixed = llm.generate(others[:1] + [p] + others[1:],
                         [SamplingParams(temperature=0.8, max_tokens=16)] + [params] * 1 +
                         [SamplingParams(temperature=0.8, max_tokens=16)] * 2, use_tqdm=False)[1]["token_ids"]
    assert alone == mixed
    other_seed = llm.generate([p], SamplingParams(temperature=1.0, top_p=0.95, max_tokens=16, seed=99,
                                                  ignore_eos=True), use_tqdm=False)[0]["token_ids"]
    assert other_seed != alone


def test_seeded_noise_is_gumbel_and_depends_on_seed_and_position():
    keys = seeded_row_keys(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0]))
    g = gumbel_noise_ref(keys, 20000)
    assert torch.isfinite(g).all()
    assert abs(g.mean().item() - 0.5772) < 0.03              # Gumbel(0, 1): mean = Euler's gamma
    assert abs(g.var().item() - torch.pi ** 2 / 6) < 0.1    # variance pi^2 / 6
    assert not torch.equal(g[0], g[1]) and not torch.equal(g[0], g[2])
    again = gumbel_noise_ref(seeded_row_keys(torch.tensor([1]), torch.tensor([0])), 20000)
    assert torch.equal(again[0], g[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows, vocab", [(1, 37), (9, 1000)] + ([(256, 151936)] if DEVICE == "cuda" else []))
def test_triton_sampler_picks_the_reference_tokens(dtype, rows, vocab):
    gen = torch.Generator().manual_seed(rows)
    logits = (3 * torch.randn(rows, vocab, generator=gen)).to(dtype)
    temps = torch.tensor([0.0, 1.0, 0.6, 1.7] * rows)[:rows]
    if rows > 1:
        logits[0, vocab // 3] = logits[0, vocab // 2] = 100.0        # a greedy tie: lowest id wins
    keys = torch.randint(0, 2**32, (rows,), generator=gen)
    logits, temps, keys = logits.to(DEVICE), temps.to(DEVICE), keys.to(DEVICE)
    got, want = sample(logits, temps, keys), sample_ref(logits, temps, keys)
    greedy = temps == 0
    assert torch.equal(got[greedy], logits[greedy].argmax(-1))
    differ = (got != want).nonzero().flatten()
    if len(differ):  # only an fp32 near-tie may pick another token (log rounding differs by ulps)
        t = torch.where(greedy, 1.0, temps).unsqueeze(1)
        scores = logits.float() / t + torch.where(greedy.unsqueeze(1), 0.0, gumbel_noise_ref(keys, vocab))
        gap = scores[differ, want[differ]] - scores[differ, got[differ]]
        assert (gap.abs() < 1e-4).all()
        assert len(differ) <= max(1, rows // 50)


def test_gumbel_noise_is_finite_at_the_extremes_of_the_hash():
    # all-ones bits once made u round up to exactly 1.0 in fp32, and the noise +inf
    g = gumbel_from_bits_ref(torch.tensor([0, 1, 2**31, 2**32 - 2, 2**32 - 1]))
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("fn", [sample, sample_ref])
def test_a_near_certain_token_wins_every_row_over_a_full_vocabulary(fn):
    # p(top) = 1 - ~5e-14: no row may pick another token (an infinite noise value would)
    rows, vocab = (512, 151936) if DEVICE == "cuda" else (16, 8192)
    logits = torch.zeros(rows, vocab)
    logits[:, 1234] = 42.0
    keys = torch.randint(0, 2**32, (rows,), generator=torch.Generator().manual_seed(0))
    tokens = fn(logits.to(DEVICE), torch.ones(rows, device=DEVICE), keys.to(DEVICE))
    assert (tokens == 1234).all()


def test_triton_sampler_never_picks_a_masked_token():
    logits = torch.full((4, 300), float("-inf"))
    logits[:, [7, 123, 299]] = torch.tensor([0.0, 1.0, 2.0])
    tokens = sample(logits.to(DEVICE), torch.ones(4, device=DEVICE), torch.arange(4, device=DEVICE))
    assert set(tokens.tolist()) <= {7, 123, 299}


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = probs.log().expand(20000, -1).contiguous()
    keys = torch.randint(0, 2**32, (20000,), generator=torch.Generator().manual_seed(0))
    tokens = Sampler()(logits, SamplingTensors(temperatures=torch.ones(20000), row_keys=keys))
    freq = torch.bincount(tokens, minlength=4).float() / 20000
    assert torch.allclose(freq, probs, atol=0.02)


def test_greedy_rows_take_the_argmax_in_a_mixed_batch():
    logits = torch.randn(4, 50)
    t = SamplingTensors(temperatures=torch.tensor([0.0, 1.0, 0.0, 1.0]), row_keys=torch.arange(4))
    tokens = Sampler()(logits, t)
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()


@pytest.mark.parametrize("top_k,top_p,min_p,allowed", [
    (2, 1.0, 0.0, {0, 1}),
    (-1, 0.7, 0.0, {0, 1}),          # 0.4 + 0.3 reaches 0.7: tokens 0 and 1
    (-1, 0.3, 0.0, {0}),
    (-1, 1.0, 0.45, {0, 1, 2}),      # min_p 0.45 * p_max 0.4 = 0.18: keeps 0.2, drops 0.1
])
def test_top_k_top_p_min_p_keep_only_their_support(top_k, top_p, min_p, allowed):
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    t = SamplingTensors(temperatures=torch.ones(1),
                        top_ks=torch.tensor([top_k if top_k > 0 else 4]),
                        top_ps=torch.tensor([top_p]), min_ps=torch.tensor([min_p]))
    masked = apply_top_k_top_p_min_p(probs.log(), t)
    kept = set(torch.isfinite(masked[0]).nonzero().flatten().tolist())
    assert kept == allowed


def test_top_p_of_one_keeps_the_tail_even_when_the_fp32_cumsum_reaches_one_early():
    # a row with top_p = 1 next to one that asks for top-p: its tiny-probability tail must survive
    logits = torch.zeros(2, 1000)
    logits[:, 0] = 30.0                              # p0 = 1 - 1e-10: the fp32 cumsum is 1.0 at once
    t = SamplingTensors(temperatures=torch.ones(2), top_ps=torch.tensor([0.5, 1.0]))
    masked = apply_top_k_top_p_min_p(logits, t)
    assert torch.isfinite(masked[1]).all()
    assert torch.isfinite(masked[0]).sum() == 1      # top_p = 0.5 keeps only the top token
