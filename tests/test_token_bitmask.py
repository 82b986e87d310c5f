"""The token-bitmask kernel (aios/kernels/token_bitmask.py) against its torch reference and the
definition: a clear bit is -inf, a set bit and every unnamed row are untouched."""

import numpy as np
import pytest
import torch

from aios.kernels.token_bitmask import apply_token_bitmask, apply_token_bitmask_ref


def random_case(num_rows: int, vocab: int, rows: list[int], seed: int = 0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, vocab, generator=g).to(dtype).to(device)
    allowed = torch.rand(len(rows), -(-vocab // 32) * 32, generator=g) < 0.3
    words = np.packbits(allowed.numpy().astype(np.uint8), axis=-1, bitorder="little").view(np.int32)
    bitmask = torch.from_numpy(words.copy()).to(device)
    return logits, bitmask, torch.tensor(rows, dtype=torch.int32, device=device), allowed[:, :vocab].to(device)


@pytest.mark.parametrize("vocab", [1, 31, 32, 33, 1000])
def test_reference_masks_exactly_the_clear_bits_of_the_named_rows(vocab):
    logits, bitmask, rows, allowed = random_case(5, vocab, [3, 0])
    before = logits.clone()
    apply_token_bitmask_ref(logits, bitmask, rows)
    for j, r in enumerate(rows.tolist()):
        want = before[r].masked_fill(~allowed[j], float("-inf"))
        assert torch.equal(logits[r], want)
    for r in (1, 2, 4):                                   # rows without a constraint
        assert torch.equal(logits[r], before[r])


def test_no_rows_is_a_no_op():
    logits, bitmask, _, _ = random_case(3, 100, [])
    before = logits.clone()
    apply_token_bitmask_ref(logits, bitmask[:0], torch.zeros(0, dtype=torch.int32))
    apply_token_bitmask(logits, bitmask[:0], torch.zeros(0, dtype=torch.int32))
    assert torch.equal(logits, before)


@pytest.mark.parametrize("vocab, rows", [(100, [2]), (1000, [0, 4, 1]), (257, [3])])
def test_triton_kernel_equals_reference_under_the_interpreter(vocab, rows):
    logits, bitmask, r, _ = random_case(5, vocab, rows, seed=vocab)
    want = logits.clone()
    apply_token_bitmask_ref(want, bitmask, r)
    apply_token_bitmask(logits, bitmask, r)
    assert torch.equal(logits, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [4096, 151936])
def test_triton_kernel_equals_reference_on_cuda(dtype, vocab):
    rows = [0, 5, 63, 17]
    logits, bitmask, r, _ = random_case(64, vocab, rows, seed=1, dtype=dtype, device="cuda")
    want = logits.clone()
    apply_token_bitmask_ref(want, bitmask, r)
    apply_token_bitmask(logits, bitmask, r)
    assert torch.equal(logits, want)
