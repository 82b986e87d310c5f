"""Lesson 12: Gumbel-max sampling, the top-k / top-p / min-p masks, seeds that survive batching, and
the learner's sampler in the real engine (same greedy tokens, same seeded samples)."""

import numpy as np
import pytest
import torch

from aios import LLM, SamplingParams
from aios.kernels.sampling import gumbel_noise_ref, seeded_row_keys
from aios.layers.sampler import SamplingTensors

LESSON = "12"
VOCAB = 8


def logits_rows(rows: int = 4, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.readme("Build it: sample_ref")
def test_greedy_rows_are_exactly_the_argmax_ties_to_the_lowest_id(impl):
    logits = logits_rows()
    logits[1, 2] = logits[1, 5] = logits[1].max() + 1                  # a tie: token 2 wins
    out = impl.sample_ref(logits, torch.zeros(4), torch.arange(4, dtype=torch.int64))
    assert out.dtype == torch.int64 and out.tolist() == logits.argmax(-1).tolist()
    assert out[1].item() == 2


@pytest.mark.readme("Build it: sample_ref")
def test_sampled_rows_are_the_argmax_of_scaled_logits_plus_the_rows_noise(impl):
    logits = logits_rows(6)
    temps = torch.tensor([0.0, 1.0, 0.5, 2.0, 0.0, 0.7])
    keys = torch.tensor([11, 22, 33, 44, 55, 66], dtype=torch.int64)
    scaled = logits / torch.where(temps == 0, 1.0, temps).unsqueeze(1)
    want = torch.where((temps == 0).unsqueeze(1), scaled, scaled + gumbel_noise_ref(keys, VOCAB)).argmax(-1)
    assert impl.sample_ref(logits, temps, keys).tolist() == want.tolist()


@pytest.mark.readme("Build it: sample_ref")
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_frequencies_match_softmax_of_logits_over_temperature(impl, temperature):
    draws = 20_000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, float("-inf"), -0.5])
    keys = torch.randint(0, 2**32, (draws,), generator=torch.Generator().manual_seed(1), dtype=torch.int64)
    tokens = impl.sample_ref(logits.expand(draws, -1), torch.full((draws,), temperature), keys)
    freq = torch.bincount(tokens, minlength=VOCAB).float() / draws
    probs = (logits / temperature).softmax(-1)
    assert freq[6] == 0, "a -inf (masked) token must never be drawn"
    assert torch.allclose(freq, probs, atol=0.015), f"frequencies {freq.tolist()} vs softmax {probs.tolist()}"


def masks(top_ks=None, top_ps=None, min_ps=None, rows: int = 3) -> SamplingTensors:
    f = (lambda x, dt: None if x is None else torch.tensor(x, dtype=dt))
    return SamplingTensors(temperatures=torch.ones(rows), top_ks=f(top_ks, torch.int64),
                           top_ps=f(top_ps, torch.float32), min_ps=f(min_ps, torch.float32))


def kept(masked: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row > float("-inf")).flatten().tolist()) for row in masked]


ROW = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0, 2.5, -2.0, 0.5]])       # ranks: 0, 5, 2, 1, 7, 3, 4, 6


@pytest.mark.readme("Build it: the masks")
def test_top_k_keeps_the_k_likeliest_tokens_per_row(impl):
    logits = ROW.expand(3, -1).clone()
    out = impl.apply_top_k_top_p_min_p(logits, masks(top_ks=[1, 3, VOCAB]))
    assert kept(out) == [{0}, {0, 5, 2}, set(range(VOCAB))]
    assert torch.equal(out[2], logits[2]) and out[1, 5] == logits[1, 5], "kept tokens keep their logits"


@pytest.mark.readme("Build it: the masks")
def test_top_p_keeps_a_token_while_the_mass_before_it_is_below_p(impl):
    logits = ROW.expand(4, -1).clone()
    probs = ROW[0].softmax(-1)
    order = ROW[0].argsort(descending=True).tolist()
    mass_before = (probs[order].cumsum(0) - probs[order]).tolist()
    p = (mass_before[2] + mass_before[3]) / 2                          # between the 3rd and 4th token
    out = impl.apply_top_k_top_p_min_p(logits, masks(top_ps=[p, 1e-6, 1.0, 0.999999], rows=4))
    assert kept(out)[0] == set(order[:3])
    assert kept(out)[1] == {order[0]}, "the most likely token always stays"
    assert kept(out)[2] == set(range(VOCAB)), "top_p = 1 keeps every token"


@pytest.mark.readme("Build it: the masks")
def test_top_p_renormalizes_what_top_k_kept_and_min_p_cuts_below_p_max(impl):
    logits = ROW.expand(2, -1).clone()
    # top_k=2 leaves tokens 0 and 5: renormalized, token 0 holds ~0.62 of the mass, so top_p=0.6 keeps only it
    out = impl.apply_top_k_top_p_min_p(logits, masks(top_ks=[2, VOCAB], top_ps=[0.6, 1.0], rows=2))
    assert kept(out) == [{0}, set(range(VOCAB))]
    probs = ROW[0].softmax(-1)
    out = impl.apply_top_k_top_p_min_p(logits, masks(min_ps=[0.3, 0.0], rows=2))
    assert kept(out)[0] == set(torch.nonzero(probs >= 0.3 * probs.max()).flatten().tolist())
    assert kept(out)[1] == set(range(VOCAB)), "min_p = 0 keeps every token"


@pytest.mark.readme("Build it: seeds")
def test_sampling_tensors_sends_only_what_some_row_asks_for(impl):
    greedy = SamplingParams(temperature=0.0, top_k=3)
    t = impl.sampling_tensors([greedy, greedy], [0, 4], VOCAB, np.random.default_rng(0), torch.from_numpy)
    assert t.all_greedy and t.temperatures.tolist() == [0.0, 0.0]
    t = impl.sampling_tensors([greedy, SamplingParams(temperature=0.7, top_k=VOCAB)], [0, 4], VOCAB,
                              np.random.default_rng(0), torch.from_numpy)
    assert not t.all_greedy and t.top_ks is None and t.top_ps is None and t.min_ps is None, \
        "top_k >= vocab_size is off, and a greedy row's top_k asks for nothing"
    assert t.row_keys is not None and t.row_keys.dtype == torch.int64 and t.row_keys.shape == (2,)
    t = impl.sampling_tensors([greedy, SamplingParams(temperature=0.7, top_k=3, top_p=0.5)], [0, 4], VOCAB,
                              np.random.default_rng(0), torch.from_numpy)
    assert t.top_ks.tolist() == [VOCAB, 3] and t.top_ps.tolist() == [1.0, 0.5] and t.min_ps is None


@pytest.mark.readme("Build it: seeds")
def test_a_seeded_rows_key_is_its_seed_and_position_whatever_the_batch(impl):
    seeded = SamplingParams(temperature=0.8, seed=1234)
    other = SamplingParams(temperature=1.0)
    alone = impl.sampling_tensors([seeded], [5], VOCAB, np.random.default_rng(0), torch.from_numpy).row_keys
    batch = impl.sampling_tensors([other, other, seeded, other], [0, 9, 5, 2], VOCAB,
                                  np.random.default_rng(7), torch.from_numpy).row_keys
    want = seeded_row_keys(torch.tensor([1234]), torch.tensor([5]))
    assert alone.tolist() == want.tolist() and batch[2].item() == want.item()
    unseeded = [impl.sampling_tensors([other], [0], VOCAB, np.random.default_rng(s), torch.from_numpy).row_keys.item()
                for s in range(4)]
    assert len(set(unseeded)) == 4, "unseeded rows take their keys from the generator"
    assert all(0 <= k < 2**32 for k in unseeded)


@pytest.mark.readme("Build it")
def test_the_sampler_draws_a_seeded_rows_token_independently_of_the_batch(impl):
    vocab = 64
    logits = logits_rows(5, vocab, seed=3)
    seeded = SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=7)
    sampler = impl.Sampler()
    for position in range(6):
        one = impl.sampling_tensors([seeded], [position], vocab, np.random.default_rng(0), torch.from_numpy)
        mixed = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.3, min_p=0.1), seeded,
                 SamplingParams(temperature=0.5), SamplingParams(temperature=0.0)]
        many = impl.sampling_tensors(mixed, [3, 1, position, 0, 8], vocab, np.random.default_rng(position),
                                     torch.from_numpy)
        alone_tok = sampler(logits[2:3], one)
        batch_tok = sampler(logits, many)
        assert batch_tok[2] == alone_tok[0], f"output position {position}: the seeded row's token moved with the batch"
        assert batch_tok[0] == logits[0].argmax() and batch_tok[4] == logits[4].argmax(), "greedy rows take the argmax"


@pytest.mark.readme("Build it")
def test_the_sampler_keeps_sampled_tokens_inside_the_masks(impl):
    vocab, rows = 32, 400
    logits = logits_rows(1, vocab, seed=4).expand(rows, -1).contiguous()
    t = SamplingTensors(temperatures=torch.full((rows,), 1.5), top_ks=torch.full((rows,), 4),
                        row_keys=torch.arange(rows, dtype=torch.int64))
    tokens = impl.Sampler()(logits, t)
    assert set(tokens.tolist()) == set(logits[0].topk(4).indices.tolist())


def engine_tokens(ckpt: str, params, sampler=None) -> list[list[int]]:
    prompts = [[5, 17, 300, 42], [7, 7, 120], [400, 3, 99, 8, 250], [11]]
    llm = LLM(ckpt, device="cpu", dtype="float32", kvcache_block_size=16, **({"sampler": sampler} if sampler else {}))
    try:
        return [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    finally:
        llm.close()


@pytest.mark.readme("Build it")
def test_the_engine_with_your_sampler_gives_the_reference_tokens(impl, tiny_ckpt):
    greedy = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    assert engine_tokens(tiny_ckpt, greedy, impl.Sampler()) == engine_tokens(tiny_ckpt, greedy)
    seeded = [SamplingParams(temperature=0.8, top_p=0.9, top_k=50, max_tokens=10, ignore_eos=True, seed=s)
              for s in (1, 2, 3, 4)]
    assert engine_tokens(tiny_ckpt, seeded, impl.Sampler()) == engine_tokens(tiny_ckpt, seeded)
