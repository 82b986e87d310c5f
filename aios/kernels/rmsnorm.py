"""RMSNorm, alone and fused with the residual add that precedes it in every decoder layer.

Numerics follow HuggingFace's Qwen3RMSNorm exactly, rounding where it rounds:
    new_residual = x + residual                    (in the input dtype)
    h = new_residual.float()
    h = h * rsqrt(mean(h ** 2, -1) + eps)          (fp32)
    out = weight * h.to(input_dtype)               (in weight's and input's promoted dtype)

Gemma's variant (`gemma_rms_norm*`, HF's Gemma3RMSNorm) scales by (1 + weight), weight stored
zero-centred, and rounds once, at the end: out = (h * (1 + weight.float())).to(input_dtype).

Invariants (tests/test_kernels.py checks each):
- x `[N, hidden]` (rows may be strided; hidden is contiguous). Outputs are new contiguous tensors;
  the inputs are never written.
- The Triton versions round at the same points as the refs, so they differ only by the order of
  the fp32 sum of squares and the rsqrt approximation: at most 1 ulp of the output dtype.
"""

import torch
import triton
import triton.language as tl

from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF Qwen3RMSNorm.forward."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def fused_add_rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual), the add done in the input dtype."""
    new_residual = x + residual
    return rms_norm_ref(new_residual, weight, eps), new_residual


def gemma_rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF Gemma3RMSNorm.forward: (1 + weight), computed in fp32, one rounding to x's dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * (1.0 + weight.float())).to(x.dtype)


def fused_add_gemma_rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gemma_rms_norm(x + residual), x + residual), the add done in the input dtype."""
    new_residual = x + residual
    return gemma_rms_norm_ref(new_residual, weight, eps), new_residual


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, new_residual_ptr, eps,
    stride_x, stride_r, stride_o, stride_nr,
    HIDDEN: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, GEMMA: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < HIDDEN
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)  # rounded like torch's x + residual
        tl.store(new_residual_ptr + row * stride_nr + offs, x, mask=mask)
    h = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(h * h, 0) / HIDDEN + eps)
    w = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if GEMMA:
        out = (h * rstd) * (1.0 + w)
    else:
        out = w * (h * rstd).to(x.dtype).to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(x, residual, weight, eps, gemma=False):
    num_rows, hidden = x.shape
    assert weight.shape == (hidden,) and x.stride(-1) == 1 and weight.stride(-1) == 1
    out_dtype = x.dtype if gemma else torch.promote_types(weight.dtype, x.dtype)
    out = torch.empty(num_rows, hidden, dtype=out_dtype, device=x.device)
    new_residual = torch.empty(num_rows, hidden, dtype=x.dtype, device=x.device) if residual is not None else out
    if num_rows == 0:
        return out, new_residual
    block = triton.next_power_of_2(hidden)
    num_warps = min(16, max(1, block // 256))
    r = residual if residual is not None else x
    assert r.shape == x.shape and r.stride(-1) == 1
    pdl = pdl_enabled(x.device)
    _rms_norm_kernel[(num_rows,)](
        x, r, weight, out, new_residual, eps,
        x.stride(0), r.stride(0), out.stride(0), new_residual.stride(0),
        HIDDEN=hidden, BLOCK=block, HAS_RESIDUAL=residual is not None, GEMMA=gemma, USE_PDL=pdl,
        num_warps=num_warps, launch_pdl=pdl,
    )
    return out, new_residual


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Triton version of rms_norm_ref."""
    return _launch(x, None, weight, eps)[0]


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of fused_add_rms_norm_ref: one read of x and residual, two writes."""
    return _launch(x, residual, weight, eps)


def gemma_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Triton version of gemma_rms_norm_ref."""
    return _launch(x, None, weight, eps, gemma=True)[0]


def fused_add_gemma_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of fused_add_gemma_rms_norm_ref."""
    return _launch(x, residual, weight, eps, gemma=True)
