"""Fixtures of the lesson checks. `impl` is the module under test: the learner's workspace.lessonNN,
or with AIOS_CHECK_IMPL=reference the reference solution lessons.checks.reference.lessonNN."""

import importlib
import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")       # Triton kernels run on the CPU, interpreted
    torch.set_num_threads(1)

import pytest  # noqa: E402

from aios.utils.tiny_checkpoint import make_checkpoint  # noqa: E402

IMPLS = ("mine", "reference")


def impl_name() -> str:
    which = os.environ.get("AIOS_CHECK_IMPL", "mine")
    if which not in IMPLS:
        raise ValueError(f"AIOS_CHECK_IMPL must be one of {IMPLS}, got {which!r}")
    return which


def load_impl(lesson: str):
    """The module under test for lesson NN: the reference, this clone's workspace/lessonNN.py, or the
    one under AIOS_CHECK_WORKSPACE (a directory holding another workspace/, e.g. the shipped stubs)."""
    if impl_name() == "reference":
        return importlib.import_module(f"lessons.checks.reference.lesson{lesson}")
    root = os.environ.get("AIOS_CHECK_WORKSPACE")
    if root:
        path = os.path.join(root, "workspace", f"lesson{lesson}.py")
        spec = importlib.util.spec_from_file_location(f"_workspace_under_test.lesson{lesson}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(f"workspace.lesson{lesson}")


def pytest_configure(config):
    config.addinivalue_line("markers", "readme(section): the lesson README section that explains this check")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (this check runs on a GPU machine only)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def impl(request):
    return load_impl(request.module.LESSON)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """A random Qwen3 (untied embeddings, GQA 4/2, head_dim 32) with a small BPE tokenizer."""
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3")))
