"""A step's inputs reach the device intact, each array 16-byte aligned in its pack (aios/engine/upload.py)."""

from __future__ import annotations

import numpy as np
import torch

from aios.engine.step_inputs import dummy_prefill_inputs
from aios.engine.upload import PACKS, upload_step_inputs


def test_every_uploaded_array_equals_its_host_array_and_starts_16_byte_aligned():
    # odd lengths everywhere: an unpadded pack would put the next array at an unaligned offset
    inputs = dummy_prefill_inputs([3, 5, 1], [1, 2, 1], block_size=4)
    inputs.placeholder_dst = np.array([1], np.int64)
    inputs.placeholder_src = np.array([0], np.int64)
    uploaded = upload_step_inputs(inputs, torch.device("cpu"))
    assert set(uploaded) == {name for names in PACKS.values() for name in names}
    for name, t in uploaded.items():
        host = getattr(inputs, name)
        assert t.shape == host.shape and t.dtype == torch.from_numpy(host).dtype, name
        assert np.array_equal(t.numpy(), host), name
        assert t.storage_offset() * t.element_size() % 16 == 0, f"{name} starts at an unaligned offset"
