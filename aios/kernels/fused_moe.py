"""The experts of a sparse MoE layer: each token through its top-k SiLU-gated MLPs, weighted (lesson 16).

    hidden_states [T, H], w13 [E, 2 * I, H] (gate rows then up rows, per expert), w2 [E, H, I],
    topk_weights [T, k] (the router's weights: fp32 from topk_softmax, or the logits' dtype from
    select_experts; read in fp32 either way), topk_ids [T, k] (int32 or int64)
    out[t] = sum_j topk_weights[t, j] * w2[e] @ (silu(w13[e, :I] @ x_t) * (w13[e, I:] @ x_t)),  e = topk_ids[t, j]

`fused_moe_ref` is the spec: a loop over the experts, each run on every token and weighted by the
token's weight for it (0 where the expert was not chosen). That is E / k times the FLOPs of the
routed pairs, but no shape depends on the routing, so it needs no host sync (a CUDA graph can hold
it) and it adds each expert's contribution in HF's order (experts ascending, rounded to the dtype).

`fused_moe` computes only the routed (token, expert) pairs. For a few decode tokens (up to
MAX_PAIRS_GEMV pairs) it reads each pair's expert directly, in two streaming gemvs with the SiLU and
the top-k sum folded in (aios/kernels/moe_gemv.py); beyond, as vLLM's fused MoE does:
1. `moe_align_block_size` (aios/kernels/moe_align.py): the T * k pairs sorted by expert, each
   expert's run padded to a multiple of BLOCK_M (so a block of BLOCK_M rows belongs to one expert),
   on the device, with no host sync (one Triton launch for a decode batch, three beyond);
2. one grouped GEMM over the stacked w13: block b multiplies its rows of x by w13[expert_ids[b]];
3. SiLU(gate) * up: in that GEMM's epilogue up to a decode batch's pairs (each program holds a
   gate tile and its up tile), else aios/kernels/activation.py;
4. a second grouped GEMM over w2, each row scaled by its routing weight;
5. the k rows of each token summed.

Invariants (tests/test_fused_moe.py checks each): the Triton path equals the reference up to fp32
summation order (fp32 dots are IEEE, no TF32); padding rows (the sentinel T * k) read nothing and
write nothing; no host sync, so decode steps replay inside a CUDA graph. The grouped GEMM is
launched with PDL on Hopper (aios/kernels/pdl.py): it waits before its first load, since which
weights it reads comes from the layout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from aios.kernels.activation import silu_and_mul, silu_and_mul_ref
from aios.kernels.moe_align import moe_align_block_size
from aios.kernels.moe_gemv import MAX_PAIRS_GEMV, fused_moe_gemv
from aios.kernels.moe_tiles import MoeTiles
from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel


def fused_moe_ref(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> torch.Tensor:
    """Plain-torch spec: every expert on every token, weighted by the token's routing weight for it."""
    out = torch.zeros_like(hidden_states)                                  # [T, H]
    for e in range(w13.shape[0]):
        weight = (topk_weights * (topk_ids == e)).sum(dim=-1, keepdim=True)   # [T, 1]; 0: not routed to e
        h = silu_and_mul_ref(hidden_states @ w13[e].t())                  # [T, I]
        out += (h @ w2[e].t()) * weight
    return out


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:          # Triton's CPU interpreter multiplies bf16 tiles as raw uint16; fp32 there is exact
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _fused_moe_kernel(
    a_ptr, b_ptr, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    N, K, num_pairs,
    stride_am, stride_be, stride_bn, stride_bk, stride_cm,
    A_ROWS_PER_PAIR: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr, SILU_AND_MUL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, USE_PDL: tl.constexpr,
):
    """C[pair] = A[pair // A_ROWS_PER_PAIR] @ B[expert]^T for the BLOCK_M pairs of one block
    (times the pair's routing weight if MUL_ROUTED_WEIGHT), one BLOCK_N slice of N per program.
    SILU_AND_MUL: B holds 2N rows (gate, then up) and C[pair] = silu(A @ gate^T) * (A @ up^T),
    rounded where HF rounds (the matmul's output, silu, the product; aios/kernels/activation.py)."""
    wait_for_previous_kernel(USE_PDL)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(num_tokens_post_padded_ptr):
        return                                                             # a block past the padding
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_token_ids_ptr + offs_m)
    mask_m = pair < num_pairs                                              # sentinel rows: padding
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    a_rows = a_ptr + (pair // A_ROWS_PER_PAIR).to(tl.int64)[:, None] * stride_am
    b_cols = b_ptr + expert * stride_be + offs_n.to(tl.int64)[None, :] * stride_bn
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)            # SILU_AND_MUL only
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(a_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_cols + offs_k[:, None] * stride_bk, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc += _dot(a, b, PRECISION, UPCAST)
        if SILU_AND_MUL:
            b_up = tl.load(b_cols + N * stride_bn + offs_k[:, None] * stride_bk,
                           mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc_up += _dot(a, b_up, PRECISION, UPCAST)
    dtype = c_ptr.dtype.element_ty
    if SILU_AND_MUL:
        gate = acc.to(dtype).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)      # torch's silu, rounded
        acc = act * acc_up.to(dtype).to(tl.float32)
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + pair, mask=mask_m, other=0.0)
        acc = acc * w.to(tl.float32)[:, None]
    c = c_ptr + pair.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c, acc.to(dtype), mask=mask_m[:, None] & mask_n[None, :])


def fused_moe_config(num_tokens: int, top_k: int, device: torch.device, tiles: MoeTiles | None = None) -> dict:
    """Tile sizes of the grouped GEMMs for num_tokens tokens routed to top_k experts each: the
    measured table's entry where the layer has one (aios/kernels/moe_tiles.py, written by
    benchmarks/tune_moe.py), else a rule: small row blocks when few pairs per expert (decode),
    larger for prefill, the SiLU inside the first GEMM up to a decode batch of 256 tokens at top-8."""
    if device.type != "cuda":
        return dict(block_m=16, block_n=32, block_k=32, num_warps=4, num_stages=1, silu_in_gemm=True)
    if tiles is not None:
        return tiles.choose(num_tokens)
    num_pairs = num_tokens * top_k
    block_m = 16 if num_pairs <= 64 else (32 if num_pairs <= 1024 else 64)
    return dict(block_m=block_m, block_n=64, block_k=64, num_warps=4, num_stages=3, silu_in_gemm=num_pairs <= 2048)


def _grouped_gemm(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, num_pairs,
                  a_rows_per_pair, mul_routed_weight, cfg, silu_and_mul=False) -> None:
    n, k = c.shape[1], b.shape[2]
    grid = (sorted_token_ids.numel() // cfg["block_m"], triton.cdiv(n, cfg["block_n"]))
    pdl = pdl_enabled(a.device)
    _fused_moe_kernel[grid](
        a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
        n, k, num_pairs,
        a.stride(0), b.stride(0), b.stride(1), b.stride(2), c.stride(0),
        A_ROWS_PER_PAIR=a_rows_per_pair, MUL_ROUTED_WEIGHT=mul_routed_weight, SILU_AND_MUL=silu_and_mul,
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        PRECISION="ieee" if a.dtype == torch.float32 else "tf32", UPCAST=a.device.type != "cuda", USE_PDL=pdl,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], launch_pdl=pdl,
    )


def fused_moe(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, block_m: int | None = None, gemv: bool | None = None,
              silu_in_gemm: bool | None = None, tiles: MoeTiles | None = None) -> torch.Tensor:
    """Triton version of fused_moe_ref: only the routed pairs; up to MAX_PAIRS_GEMV pairs (or where
    `gemv` says) two gemv launches (aios/kernels/moe_gemv.py), else sorted by expert, two grouped
    GEMMs at the tiles fused_moe_config picks (from the layer's measured `tiles` where it has them;
    the SiLU inside the first where they or `silu_in_gemm` say)."""
    num_tokens, top_k = topk_ids.shape
    num_pairs = num_tokens * top_k
    assert hidden_states.stride(1) == 1 and w13.stride(2) == 1 and w2.stride(2) == 1
    if num_tokens == 0:
        return torch.zeros_like(hidden_states)
    if gemv if gemv is not None else num_pairs <= MAX_PAIRS_GEMV:
        return fused_moe_gemv(hidden_states, w13, w2, topk_weights.contiguous(), topk_ids.contiguous())
    cfg = fused_moe_config(num_tokens, top_k, hidden_states.device, tiles)
    return sorted_fused_moe(hidden_states, w13, w2, topk_weights, topk_ids, cfg, _grouped_gemm, block_m, silu_in_gemm)


def sorted_fused_moe(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                     topk_ids: torch.Tensor, cfg: dict, grouped_gemm: Callable[..., None], block_m: int | None = None,
                     silu_in_gemm: bool | None = None) -> torch.Tensor:
    """The sorted path at tiles `cfg` (block_m, silu_in_gemm: overrides): the layout, two grouped GEMMs
    (`grouped_gemm`: `_grouped_gemm`, or fused_moe_tma.py's through TMA, with its arguments), the
    SiLU, the top-k sum."""
    num_tokens, hidden = hidden_states.shape
    num_experts, two_i, _ = w13.shape
    top_k = topk_ids.shape[1]
    num_pairs = num_tokens * top_k
    if block_m is not None:
        cfg["block_m"] = block_m
    if silu_in_gemm is not None:
        cfg["silu_in_gemm"] = silu_in_gemm
    sorted_token_ids, expert_ids, num_post = moe_align_block_size(topk_ids, cfg["block_m"], num_experts)
    weights = topk_weights.reshape(-1).contiguous()                        # [T * k], pair order
    if cfg["silu_in_gemm"]:
        act = torch.empty(num_pairs, two_i // 2, dtype=hidden_states.dtype, device=hidden_states.device)
        grouped_gemm(hidden_states, w13, act, weights, sorted_token_ids, expert_ids, num_post, num_pairs,
                     top_k, False, cfg, silu_and_mul=True)                 # [T * k, I]
    else:
        gate_up = torch.empty(num_pairs, two_i, dtype=hidden_states.dtype, device=hidden_states.device)
        grouped_gemm(hidden_states, w13, gate_up, weights, sorted_token_ids, expert_ids, num_post, num_pairs,
                     top_k, False, cfg)                                    # row t*k+j reads token t
        act = silu_and_mul(gate_up)                                        # [T * k, I]
    down = torch.empty(num_pairs, hidden, dtype=hidden_states.dtype, device=hidden_states.device)
    grouped_gemm(act, w2, down, weights, sorted_token_ids, expert_ids, num_post, num_pairs, 1, True, cfg)
    return down.view(num_tokens, top_k, hidden).sum(dim=1)                 # [T, H]
