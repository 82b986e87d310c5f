"""The experts of a few decode tokens as two streaming gemvs, no layout (lesson 16).

At batch 1 the k experts of the token are distinct, so the sorted layout (aios/kernels/moe_align.py)
buys no weight reuse: every expert's weights are read once either way. These two kernels read each
routed pair's expert directly from topk_ids, and fold the two small steps around the grouped GEMMs
into them, so a decode MoE layer is two launches instead of five (layout, GEMM, SiLU*mul, GEMM, sum):

- `_moe_gate_up_silu_kernel`, one program per (pair, BLOCK_N rows of I): gate and up rows of
  w13[e] times x_t, then silu(gate) * up, rounded where HF rounds (the gate/up matmul's output,
  silu, the product; as aios/kernels/activation.py);
- `_moe_down_sum_kernel`, one program per (token, BLOCK_N rows of H): for each of the token's k
  pairs, w2[e] times its activation, times its routing weight, rounded to the dtype (where the
  grouped GEMM rounds), and summed over the k in fp32: the top-k sum needs no launch and no atomics,
  so the result is deterministic.

From a few tokens on, tokens share experts and a pair-by-pair read would read a shared expert once
per pair (up to L2 hits): `fused_moe` takes this path only up to MAX_PAIRS_GEMV pairs.
Invariants (tests/test_fused_moe.py checks each): equal to `fused_moe_ref` (the spec) up to fp32
summation order; no host sync; launched with PDL on Hopper (aios/kernels/pdl.py): each program
waits before its first load, since even which weights to read comes from the router's output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from aios.kernels.device import sm_count
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel

MAX_PAIRS_GEMV = 16                  # 2 tokens at top-8 (not yet timed against the sorted path on a GPU)


@triton.jit
def _moe_gate_up_silu_kernel(
    x_ptr, w13_ptr, topk_ids_ptr, act_ptr, K, INTER, stride_x, stride_we, stride_wn, stride_act,
    TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    pair = tl.program_id(0).to(tl.int64)
    token = pair // TOP_K
    expert = tl.load(topk_ids_ptr + pair).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < INTER
    gate_rows = w13_ptr + expert * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn
    up_rows = gate_rows + INTER * stride_wn
    acc_gate = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + token * stride_x + offs_k, mask=mask_k, other=0.0).to(tl.float32)[None, :]
        mask = mask_n[:, None] & mask_k[None, :]
        gate = tl.load(gate_rows + offs_k[None, :], mask=mask, other=0.0, eviction_policy="evict_first")
        up = tl.load(up_rows + offs_k[None, :], mask=mask, other=0.0, eviction_policy="evict_first")
        acc_gate += gate.to(tl.float32) * x
        acc_up += up.to(tl.float32) * x
    dtype = act_ptr.dtype.element_ty
    gate = tl.sum(acc_gate, axis=1).to(dtype).to(tl.float32)
    up = tl.sum(acc_up, axis=1).to(dtype).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)        # torch's silu, rounded
    tl.store(act_ptr + pair * stride_act + offs_n, (act * up).to(dtype), mask=mask_n)


@triton.jit
def _moe_down_sum_kernel(
    act_ptr, w2_ptr, topk_weights_ptr, topk_ids_ptr, out_ptr, N, K, stride_act, stride_we, stride_wn, stride_out,
    TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    token = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    dtype = out_ptr.dtype.element_ty
    out = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        pair = token * TOP_K + j
        expert = tl.load(topk_ids_ptr + pair).to(tl.int64)
        weight = tl.load(topk_weights_ptr + pair).to(tl.float32)
        rows = w2_ptr + expert * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            offs_k = k + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = tl.load(act_ptr + pair * stride_act + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            b = tl.load(rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0,
                        eviction_policy="evict_first")
            acc += b.to(tl.float32) * a[None, :]
        out += (tl.sum(acc, axis=1) * weight).to(dtype).to(tl.float32)  # rounded per pair, as the GEMM path
    tl.store(out_ptr + token * stride_out + offs_n, out.to(dtype), mask=mask_n)


def moe_gemv_config(num_tokens: int, top_k: int, intermediate: int, hidden: int, device: torch.device) -> dict:
    """Rows per program: the most (up to 16) that still give ~2 programs per SM; K in tiles of 256."""
    if device.type != "cuda":
        return dict(block_n=8, block_n_down=8, block_k=32, num_warps=1)
    target = 2 * sm_count(device)
    num_pairs = num_tokens * top_k

    def rows(programs_per_row) -> int:
        block_n = 16
        while block_n > 4 and programs_per_row(block_n) < target:
            block_n //= 2
        return block_n
    return dict(block_n=rows(lambda b: num_pairs * triton.cdiv(intermediate, b)),
                block_n_down=rows(lambda b: num_tokens * triton.cdiv(hidden, b)), block_k=256, num_warps=4)


def fused_moe_gemv(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                   topk_ids: torch.Tensor, cfg: dict | None = None) -> torch.Tensor:
    """fused_moe_ref's result for a few tokens, in two launches (see the module docstring)."""
    num_tokens, hidden = hidden_states.shape
    top_k = topk_ids.shape[1]
    num_pairs, intermediate = num_tokens * top_k, w2.shape[2]
    assert topk_ids.is_contiguous() and topk_weights.is_contiguous() and w13.stride(2) == 1 and w2.stride(2) == 1
    cfg = cfg or moe_gemv_config(num_tokens, top_k, intermediate, hidden, hidden_states.device)
    act = torch.empty(num_pairs, intermediate, dtype=hidden_states.dtype, device=hidden_states.device)
    out = torch.empty_like(hidden_states)
    pdl = pdl_enabled(hidden_states.device)
    _moe_gate_up_silu_kernel[(num_pairs, triton.cdiv(intermediate, cfg["block_n"]))](
        hidden_states, w13, topk_ids, act, hidden, intermediate, hidden_states.stride(0), w13.stride(0),
        w13.stride(1), act.stride(0), TOP_K=top_k, BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], USE_PDL=pdl,
        num_warps=cfg["num_warps"], launch_pdl=pdl,
    )
    block_n_down = cfg["block_n_down"]
    _moe_down_sum_kernel[(num_tokens, triton.cdiv(hidden, block_n_down))](
        act, w2, topk_weights, topk_ids, out, hidden, intermediate, act.stride(0), w2.stride(0), w2.stride(1),
        out.stride(0), TOP_K=top_k, BLOCK_N=block_n_down, BLOCK_K=cfg["block_k"], USE_PDL=pdl,
        num_warps=cfg["num_warps"], launch_pdl=pdl,
    )
    return out
