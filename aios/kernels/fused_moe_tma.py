"""The fused MoE's grouped GEMM with Hopper TMA loads of the expert weights, opt-in (lesson 16).

`fused_moe_tma` computes what `fused_moe` (aios/kernels/fused_moe.py) computes, through the same
steps: the decode gemvs up to MAX_PAIRS_GEMV pairs, else `moe_align_block_size`'s sorted layout,
a grouped GEMM over w13 (the SiLU in its epilogue or its own launch), a second over w2 scaled by
the routing weights, the top-k sum. Only the grouped GEMM differs, in two ways:

- The weight tile of expert e at rows [n0, n0 + BLOCK_N), columns [k0, k0 + BLOCK_K) is one 2-D
  box of w13 viewed as [E * 2I, H] (or w2 as [E * H, I]), loaded by the TMA unit through a host-side
  tensor descriptor (`triton.tools.tensor_descriptor.TensorDescriptor`, in Triton 3.6 and 3.9; Triton
  encodes the CUtensorMap at launch and passes it as a kernel parameter, so no global workspace
  and no `triton.set_allocator`; a CUDA graph keeps the parameter, and the weights do not move).
  Columns past K come back as zeros; rows past the expert's N are another expert's (or the up
  half's) and only reach output columns the store masks. The activation rows are gathered through
  sorted_token_ids, so they stay ordinary (cp.async) loads.
- `programs_per_sm`: a persistent grid of programs_per_sm * SMs programs, each looping over
  (row block, N tile) work items, row blocks fastest (an expert's row blocks run side by side and
  share its weight tiles in L2), the loop flattened (`tl.range(flatten=True)`: one pipelined loop
  over (item, K step), so the next item's first tiles load during this one's epilogue). None: one
  program per work item, as the default kernel's grid. Only row blocks below num_tokens_post_padded
  are work items.
Not used: `tl.range(warp_specialize=True)`: Triton 3.6 documents it for Blackwell, and for sm_90 it
compiled some tiles without their pipeline and failed others (aios/kernels/NOTES.md).

Invariants (tests/test_fused_moe_tma.py checks each): equal to `fused_moe_ref` as `fused_moe` is
(padding rows read and write nothing, fp32 dots IEEE); no host sync; PDL (aios/kernels/pdl.py): every
program waits before its first load, the work-item count included, since it comes from the layout.
The weights need 16-byte aligned rows (K * itemsize % 16 == 0) and experts stacked contiguously.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from aios.kernels.device import sm_count
from aios.kernels.fused_moe import _dot, fused_moe_config, fused_moe_ref, sorted_fused_moe
from aios.kernels.moe_gemv import MAX_PAIRS_GEMV, fused_moe_gemv
from aios.kernels.moe_tiles import MoeTiles
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel

# the reference is fused_moe.py's; the measured table is MoeTiles.load(..., gemm="tma") (moe_tiles.py)
__all__ = ["fused_moe_ref", "fused_moe_tma", "fused_moe_tma_config"]
PROGRAMS_PER_SM = 1          # the persistent grid's default until the H200 measures (tune_moe.py --gemm tma)


@triton.jit
def _fused_moe_tma_kernel(
    a_ptr, b_desc, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    N, K, num_pairs, b_rows_per_expert,
    stride_am, stride_cm,
    A_ROWS_PER_PAIR: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr, SILU_AND_MUL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, USE_PDL: tl.constexpr,
    FLATTEN: tl.constexpr,
):
    """_fused_moe_kernel's C (aios/kernels/fused_moe.py), B read as [BLOCK_N, BLOCK_K] boxes of the
    [E * b_rows_per_expert, K] descriptor; each program loops over work items tile = pid_n *
    num_m_blocks + pid_m, pid, pid + num_programs, ..."""
    wait_for_previous_kernel(USE_PDL)
    num_m_blocks = tl.load(num_tokens_post_padded_ptr) // BLOCK_M         # a multiple of BLOCK_M
    num_tiles = num_m_blocks * tl.cdiv(N, BLOCK_N)
    dtype = c_ptr.dtype.element_ty
    for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=FLATTEN):
        pid_m = tile % num_m_blocks
        pid_n = tile // num_m_blocks
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_token_ids_ptr + offs_m)
        mask_m = pair < num_pairs                                          # sentinel rows: padding
        b_row = tl.load(expert_ids_ptr + pid_m) * b_rows_per_expert + pid_n * BLOCK_N
        a_rows = a_ptr + (pair // A_ROWS_PER_PAIR).to(tl.int64)[:, None] * stride_am
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)        # SILU_AND_MUL only
        for k in range(0, K, BLOCK_K):
            offs_k = k + tl.arange(0, BLOCK_K)
            a = tl.load(a_rows + offs_k[None, :], mask=mask_m[:, None] & (offs_k < K)[None, :], other=0.0)
            acc += _dot(a, b_desc.load([b_row, k]).T, PRECISION, UPCAST)
            if SILU_AND_MUL:
                acc_up += _dot(a, b_desc.load([b_row + N, k]).T, PRECISION, UPCAST)
        if SILU_AND_MUL:
            gate = acc.to(dtype).to(tl.float32)
            act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)  # torch's silu, rounded
            acc = act * acc_up.to(dtype).to(tl.float32)
        if MUL_ROUTED_WEIGHT:
            w = tl.load(topk_weights_ptr + pair, mask=mask_m, other=0.0)
            acc = acc * w.to(tl.float32)[:, None]
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        c = c_ptr + pair.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
        tl.store(c, acc.to(dtype), mask=mask_m[:, None] & (offs_n < N)[None, :])


def fused_moe_tma_config(num_tokens: int, top_k: int, device: torch.device, tiles: MoeTiles | None = None,
                         programs_per_sm: int | None = PROGRAMS_PER_SM) -> dict:
    """fused_moe_config's tiles (the measured table's where it has them), plus `num_programs`: the
    persistent grid's size (programs_per_sm * SMs; None: one program per work item)."""
    cfg = fused_moe_config(num_tokens, top_k, device, tiles)
    programs_per_sm = cfg.pop("programs_per_sm", programs_per_sm)
    cfg["num_programs"] = None if programs_per_sm is None else programs_per_sm * sm_count(device)
    return cfg


def _weight_descriptor(b: torch.Tensor, cfg: dict) -> TensorDescriptor:
    """b [E, R, K] as one [E * R, K] matrix, boxes of [BLOCK_N, BLOCK_K]."""
    num_experts, rows, k = b.shape
    if b.stride(0) != rows * b.stride(1) or b.stride(2) != 1 or (b.stride(1) * b.element_size()) % 16:
        raise ValueError(f"TMA needs experts stacked contiguously with 16-byte aligned rows; got shape "
                         f"{tuple(b.shape)}, strides {b.stride()}, {b.dtype}")
    return TensorDescriptor(b, [num_experts * rows, k], [b.stride(1), 1], [cfg["block_n"], cfg["block_k"]])


def _grouped_gemm_tma(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, num_pairs,
                      a_rows_per_pair, mul_routed_weight, cfg, silu_and_mul=False) -> None:
    """fused_moe._grouped_gemm's contract (the same arguments, the same C), through TMA."""
    n, k = c.shape[1], b.shape[2]
    max_tiles = sorted_token_ids.numel() // cfg["block_m"] * triton.cdiv(n, cfg["block_n"])
    num_programs = max_tiles if cfg["num_programs"] is None else min(cfg["num_programs"], max_tiles)
    pdl = pdl_enabled(a.device)
    _fused_moe_tma_kernel[(num_programs,)](
        a, _weight_descriptor(b, cfg), c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
        n, k, num_pairs, b.shape[1],
        a.stride(0), c.stride(0),
        A_ROWS_PER_PAIR=a_rows_per_pair, MUL_ROUTED_WEIGHT=mul_routed_weight, SILU_AND_MUL=silu_and_mul,
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        PRECISION="ieee" if a.dtype == torch.float32 else "tf32", UPCAST=a.device.type != "cuda", USE_PDL=pdl,
        FLATTEN=cfg["num_programs"] is not None,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], launch_pdl=pdl,
    )


def fused_moe_tma(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor, block_m: int | None = None, gemv: bool | None = None,
                  silu_in_gemm: bool | None = None, tiles: MoeTiles | None = None,
                  programs_per_sm: int | None = PROGRAMS_PER_SM) -> torch.Tensor:
    """fused_moe with its grouped GEMMs through TMA (`_grouped_gemm_tma`): the same arguments, plus
    `programs_per_sm` (the persistent grid; None: a program per work item). A tile entry's own
    `programs_per_sm` (a table from tune_moe.py --gemm tma) wins over the argument."""
    num_tokens, top_k = topk_ids.shape
    num_pairs = num_tokens * top_k
    assert hidden_states.stride(1) == 1 and w13.stride(2) == 1 and w2.stride(2) == 1
    if num_tokens == 0:
        return torch.zeros_like(hidden_states)
    if gemv if gemv is not None else num_pairs <= MAX_PAIRS_GEMV:
        return fused_moe_gemv(hidden_states, w13, w2, topk_weights.contiguous(), topk_ids.contiguous())
    cfg = fused_moe_tma_config(num_tokens, top_k, hidden_states.device, tiles, programs_per_sm)
    return sorted_fused_moe(hidden_states, w13, w2, topk_weights, topk_ids, cfg, _grouped_gemm_tma, block_m,
                            silu_in_gemm)
