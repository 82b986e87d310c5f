"""Shared fixtures: tiny random Qwen3 checkpoints written to a temp dir, built with HF transformers.

Triton's interpreter must be switched on before triton is first imported (it is read when
@triton.jit decorates), so that the kernels run on the CPU in CI.
"""

import collections
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # the tiny test models' ops take microseconds: waking a second thread costs more than it saves,
    # and on a shared 2-core machine it can slow every op tenfold
    torch.set_num_threads(1)

import pytest  # noqa: E402

from aios.utils.tiny_checkpoint import make_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """Untied embeddings, GQA (4 heads / 2 KV heads), head_dim 32 != hidden / heads."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3")))


@pytest.fixture(scope="session")
def tiny_ckpt_tied(tmp_path_factory) -> str:
    """Tied embeddings, 2 safetensors shards."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3-tied")), tie_word_embeddings=True,
                           num_kv_heads=4, seed=1, num_shards=2)


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="K/N",
                     help="run part K of N of the selected tests, whole files each (tests/sharding.py): "
                          "a full `pytest -m gpu` split across device calls")


@pytest.hookimpl(trylast=True)   # after -m and -k have deselected theirs
def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if config.getoption("--shard"):
        from sharding import parse_shard, shard_files

        try:
            k, n = parse_shard(config.getoption("--shard"))
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
        files = [item.nodeid.split("::")[0] for item in items]
        mine = shard_files(collections.Counter(files), k, n)
        config.hook.pytest_deselected(items=[i for i, f in zip(items, files) if f not in mine])
        items[:] = [i for i, f in zip(items, files) if f in mine]
