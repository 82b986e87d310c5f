"""SwiGLU's activation: silu(gate) * up over the fused gate_up projection output; and GeGLU's,
gelu_tanh(gate) * up (Gemma 3's `gelu_pytorch_tanh`), rounded the same way.

x `[N, 2 * intermediate]` holds gate in its first half and up in its second (the fused gate/up
matmul's layout); the output `[N, intermediate]` is `silu(gate) * up`, rounded like HF's
`act_fn(gate_proj(x)) * up_proj(x)`: silu computed in fp32 and rounded to the input dtype, then the
product rounded again.

Invariants (tests/test_kernels.py checks each):
- The output is a new contiguous tensor in x's dtype; x may have strided rows, is never written.
- The Triton version rounds where the ref rounds, so they differ only by the exp approximation
  inside silu: at most 1 ulp of the dtype.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """silu(x[:, :I]) * x[:, I:] in x's dtype."""
    intermediate = x.shape[-1] // 2
    return F.silu(x[..., :intermediate]) * x[..., intermediate:]


def gelu_tanh_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """gelu(x[:, :I], approximate="tanh") * x[:, I:] in x's dtype (HF's gelu_pytorch_tanh)."""
    intermediate = x.shape[-1] // 2
    return F.gelu(x[..., :intermediate], approximate="tanh") * x[..., intermediate:]


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, stride_x, stride_o,
    INTERMEDIATE: tl.constexpr, BLOCK: tl.constexpr, GELU_TANH: tl.constexpr, USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INTERMEDIATE
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + INTERMEDIATE + offs, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    if GELU_TANH:
        # 0.5 * g * (1 + tanh(u)), u = sqrt(2/pi) * (g + 0.044715 g^3); tanh from exp(-2|u|) <= 1
        u = 0.7978845608028654 * (g + 0.044715 * g * g * g)
        e = tl.exp(-2.0 * tl.abs(u))
        tanh_u = tl.where(u >= 0, 1.0, -1.0) * (1.0 - e) / (1.0 + e)
        act = (0.5 * g * (1.0 + tanh_u)).to(gate.dtype).to(tl.float32)
    else:
        act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)  # torch's silu, rounded
    tl.store(out_ptr + row * stride_o + offs, (act * up.to(tl.float32)).to(gate.dtype), mask=mask)


def silu_and_mul(x: torch.Tensor, gelu_tanh: bool = False) -> torch.Tensor:
    """Triton version of silu_and_mul_ref (gelu_tanh: of gelu_tanh_and_mul_ref)."""
    num_rows, two_i = x.shape
    assert two_i % 2 == 0 and x.stride(-1) == 1
    intermediate = two_i // 2
    out = torch.empty(num_rows, intermediate, dtype=x.dtype, device=x.device)
    if num_rows == 0:
        return out
    block = min(1024, triton.next_power_of_2(intermediate))
    pdl = pdl_enabled(x.device)
    _silu_and_mul_kernel[(num_rows, triton.cdiv(intermediate, block))](
        x, out, x.stride(0), out.stride(0),
        INTERMEDIATE=intermediate, BLOCK=block, GELU_TANH=gelu_tanh, USE_PDL=pdl, num_warps=4, launch_pdl=pdl,
    )
    return out


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """Triton version of gelu_tanh_and_mul_ref."""
    return silu_and_mul(x, gelu_tanh=True)
