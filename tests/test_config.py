"""Config: device-picked defaults, the start-up line, and values refused where they enter."""

from types import SimpleNamespace

import pytest
import torch

from aios import Config
from aios.config import device_defaults


def _gpu_of(monkeypatch, gib: float) -> None:
    props = SimpleNamespace(total_memory=int(gib * 2**30), name="Test GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)


@pytest.mark.parametrize("gib, want", [(139.8, (1024, 16384)), (79.1, (1024, 16384)), (70.0, (1024, 16384)),
                                       (69.9, (256, 8192)), (24.0, (256, 8192))])
def test_a_gpu_of_70_gib_or_more_batches_like_vllm_does(monkeypatch, gib, want):
    _gpu_of(monkeypatch, gib)
    assert device_defaults("cuda") == want


def test_the_cpu_keeps_256_sequences_and_8192_tokens(tiny_ckpt):
    cfg = Config(tiny_ckpt, device="cpu")
    assert (cfg.max_num_seqs, cfg.max_num_batched_tokens) == device_defaults("cpu") == (256, 8192)


def test_given_values_win_over_the_device_defaults(tiny_ckpt):
    cfg = Config(tiny_ckpt, device="cpu", max_num_seqs=3, max_num_batched_tokens=77)
    assert (cfg.max_num_seqs, cfg.max_num_batched_tokens) == (3, 77)


@pytest.mark.parametrize("max_num_seqs", [1, 8, 100, 256, 1024])
def test_cuda_graphs_cover_every_decode_batch_the_scheduler_can_form(tiny_ckpt, max_num_seqs):
    sizes = Config(tiny_ckpt, device="cpu", max_num_seqs=max_num_seqs).cudagraph_batch_sizes
    assert max(sizes) == max_num_seqs and sizes == sorted(set(sizes)) and sizes[0] == 1


def test_the_start_up_line_names_what_was_picked(tiny_ckpt):
    cfg = Config(tiny_ckpt, device="cpu")
    line = cfg.describe(12)
    assert "max_num_seqs=256" in line and "max_num_batched_tokens=8192" in line and "12 KV blocks" in line


@pytest.mark.parametrize("field, value", [("max_num_seqs", 0), ("max_num_seqs", True), ("max_num_batched_tokens", 2.5),
                                          ("max_model_len", -1), ("max_stop_strings", 0),
                                          ("gpu_memory_utilization", float("nan")),
                                          ("attention_backend", "flash"), ("moe_gemm", "cutlass")])
def test_a_bad_engine_value_is_refused_naming_it(tiny_ckpt, field, value):
    with pytest.raises(ValueError, match=field):
        Config(tiny_ckpt, device="cpu", **{field: value})
