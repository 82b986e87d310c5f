"""Reference for lesson 07: aios/engine/step_inputs.py (build_step_inputs, prepare_step_inputs) and
the Context's cu_seqlens_k as aios/engine/model_runner.py's ModelRunner.execute builds it."""

from __future__ import annotations

import torch

from aios.engine.step_inputs import build_step_inputs, prepare_step_inputs

__all__ = ["build_step_inputs", "cu_seqlens_k", "prepare_step_inputs"]


def cu_seqlens_k(context_lens: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(context_lens.cumsum(0, dtype=torch.int32), (1, 0))
