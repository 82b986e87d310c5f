"""Lesson 00: the arithmetic of batching, against the README's run and the bundled model's size."""

import pytest

LESSON = "00"


@pytest.mark.readme("Build it")
def test_one_at_a_time_runs_a_pass_per_request_and_token(impl):
    assert impl.forward_passes(16, 64, batched=False) == 1024      # the README's 16 requests x 64 tokens
    assert impl.forward_passes(1, 64, batched=False) == 64
    assert impl.forward_passes(3, 1, batched=False) == 3


@pytest.mark.readme("Build it")
def test_batched_runs_one_pass_per_token_whatever_the_batch(impl):
    assert impl.forward_passes(16, 64, batched=True) == 64
    assert impl.forward_passes(1, 64, batched=True) == impl.forward_passes(1, 64, batched=False)
    assert impl.forward_passes(256, 5, batched=True) == 5


@pytest.mark.readme("Build it")
def test_weight_bytes_per_token_divide_by_the_batch(impl):
    bundled = 6_950_912                                            # lesson 01 counts them
    assert impl.weight_bytes_per_token(bundled, 4, 1) == pytest.approx(27_803_648)       # float32
    assert impl.weight_bytes_per_token(bundled, 4, 16) == pytest.approx(27_803_648 / 16)
    qwen3_0_6b = 596_049_920
    assert impl.weight_bytes_per_token(qwen3_0_6b, 2, 1) / 2**20 == pytest.approx(1136.9, abs=0.1)   # bf16
