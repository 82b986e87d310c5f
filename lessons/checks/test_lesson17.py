"""Lesson 17: the token bitmask applied to logits, and a choice's token mask, against the definition
and xgrammar's; then your bitmask inside the engine, masking real constrained requests."""

import numpy as np
import pytest
import torch

LESSON = "17"
CHOICES = ["Moses", "Moab", "Aaron", "lord god"]


def random_case(num_rows: int, vocab: int, rows: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, vocab, generator=g)
    allowed = torch.rand(len(rows), -(-vocab // 32) * 32, generator=g) < 0.4
    allowed[:, 31::32] = True                                # the sign bit set in every word: the classic slip
    words = np.packbits(allowed.numpy().astype(np.uint8), axis=-1, bitorder="little").view(np.int32)
    return logits, torch.from_numpy(words.copy()), torch.tensor(rows, dtype=torch.int32), allowed[:, :vocab]


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("vocab", [32, 100, 4096])
def test_apply_token_bitmask_masks_exactly_the_clear_bits_of_the_named_rows(impl, vocab):
    logits, bitmask, rows, allowed = random_case(6, vocab, [4, 1, 5], seed=vocab)
    before = logits.clone()
    impl.apply_token_bitmask(logits, bitmask, rows)
    for j, r in enumerate(rows.tolist()):
        want = before[r].masked_fill(~allowed[j], float("-inf"))
        assert torch.equal(logits[r], want), f"row {r}: not -inf exactly where its bits are clear"
    for r in (0, 2, 3):
        assert torch.equal(logits[r], before[r]), f"row {r} has no constraint but changed"


@pytest.mark.readme("Build it")
def test_apply_token_bitmask_with_no_rows_changes_nothing(impl):
    logits, bitmask, _, _ = random_case(3, 64, [], seed=0)
    before = logits.clone()
    impl.apply_token_bitmask(logits, bitmask[:0], torch.zeros(0, dtype=torch.int32))
    assert torch.equal(logits, before)


@pytest.fixture(scope="module")
def bible():
    from transformers import AutoTokenizer

    from aios.assets import default_model_path
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.mark.readme("Build it")
@pytest.mark.parametrize("prefix", ["", "M", "Mo", "Moses", "lord", "Aa"])
def test_choice_token_mask_equals_xgrammars_on_the_bundled_tokenizer(impl, bible, prefix):
    from lessons.checks.reference import lesson17 as reference
    ids = bible.encode(prefix, add_special_tokens=False)
    got = impl.choice_token_mask(bible, CHOICES, ids, 4096, bible.eos_token_id)
    want = reference.choice_token_mask(bible, CHOICES, ids, 4096, bible.eos_token_id)
    assert got.dtype == torch.bool and got.shape == (4096,)
    extra = [bible.decode([t]) for t in torch.nonzero(got & ~want).flatten().tolist()]
    missing = [bible.decode([t]) for t in torch.nonzero(want & ~got).flatten().tolist()]
    assert not extra and not missing, f"after {prefix!r}: allowed but should not be {extra[:5]}, missing {missing[:5]}"


@pytest.mark.readme("Build it")
def test_your_bitmask_masks_the_engines_constrained_requests(impl):
    """The engine's own bitmask fill, your apply: every output is one of the choices."""
    from aios import LLM, SamplingParams
    from aios.sampling_params import StructuredOutputsParams

    params = [SamplingParams(temperature=1.0, seed=i, max_tokens=12,
                             structured_outputs=StructuredOutputsParams(choice=CHOICES)) for i in range(6)]
    with LLM(device="cpu", kvcache_block_size=16, max_model_len=128) as llm:
        want = [o["token_ids"] for o in llm.generate(["And the lord said"] * 6, params, use_tqdm=False)]
        llm.structured_output.apply_bitmask = impl.apply_token_bitmask
        outs = llm.generate(["And the lord said"] * 6, params, use_tqdm=False)
    assert all(o["text"] in CHOICES for o in outs), [o["text"] for o in outs]
    assert [o["token_ids"] for o in outs] == want
