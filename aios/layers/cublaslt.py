"""F.linear through cuBLASLt's kernel choice instead of cuBLAS's, for the row counts where it was faster.

torch runs a bf16 matmul through cuBLAS (cublasGemmEx) by default, or through cuBLASLt when its
preferred BLAS backend says so. The two libraries share kernels but choose among them by different
heuristics, and on an H200 at a decode batch's row counts they differ at some shapes by up to ~20%
in either direction (the 8B's down_proj at 192 rows: 52.1 us through cuBLAS, 42.3 through cuBLASLt;
its gate_up at 256 rows: 75.5 against 82.1; kernels/NOTES.md, "A few rows"). aios/layers/gemm_choice.py
times both at start-up and the linear layers call this where cuBLASLt won.

The preference is process-wide state of torch, read when a matmul is dispatched: this sets it for
one call and restores it, so a CUDA graph captured around the call keeps cuBLASLt's kernel, and no
other matmul sees the change. The engine runs its forward on one thread (a TP rank is a process).
"""

import torch
import torch.nn.functional as F


def cublaslt_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(x, weight) (no bias) with torch's preferred BLAS backend set to cuBLASLt for the call."""
    before = torch.backends.cuda.preferred_blas_library()
    torch.backends.cuda.preferred_blas_library("cublaslt")
    try:
        return F.linear(x, weight)
    finally:
        torch.backends.cuda.preferred_blas_library(before)
