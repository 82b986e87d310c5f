"""SwiGLU's activation: silu(gate) * up over the fused gate_up projection output.

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


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """silu(x[:, :I]) * x[:, I:] in x's dtype."""
    intermediate = x.shape[-1] // 2
    return F.silu(x[..., :intermediate]) * x[..., intermediate:]


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, stride_x, stride_o,
    INTERMEDIATE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INTERMEDIATE
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + INTERMEDIATE + offs, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)  # torch's silu, rounded
    tl.store(out_ptr + row * stride_o + offs, (act * up.to(tl.float32)).to(gate.dtype), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """Triton version of silu_and_mul_ref."""
    num_rows, two_i = x.shape
    assert two_i % 2 == 0 and x.stride(-1) == 1
    intermediate = two_i // 2
    out = torch.empty(num_rows, intermediate, dtype=x.dtype, device=x.device)
    if num_rows == 0:
        return out
    block = min(1024, triton.next_power_of_2(intermediate))
    _silu_and_mul_kernel[(num_rows, triton.cdiv(intermediate, block))](
        x, out, x.stride(0), out.stride(0),
        INTERMEDIATE=intermediate, BLOCK=block, num_warps=4,
    )
    return out
