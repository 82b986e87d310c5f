"""The experts of a sparse MoE layer: each token through its top-k SiLU-gated MLPs, weighted (lesson 16).

    hidden_states [T, H], w13 [E, 2 * I, H] (gate rows then up rows, per expert), w2 [E, H, I],
    topk_weights [T, k] (the router's weights, in hidden_states' dtype), topk_ids [T, k] (int)
    out[t] = sum_j topk_weights[t, j] * w2[e] @ (silu(w13[e, :I] @ x_t) * (w13[e, I:] @ x_t)),  e = topk_ids[t, j]

`fused_moe_ref` is the spec: a loop over the experts, each run on every token and weighted by the
token's weight for it (0 where the expert was not chosen). That is E / k times the FLOPs of the
routed pairs, but no shape depends on the routing, so it needs no host sync (a CUDA graph can hold
it) and it adds each expert's contribution in HF's order (experts ascending, rounded to the dtype).

`fused_moe` computes only the routed (token, expert) pairs, as vLLM's fused MoE does:
1. `moe_align_block_size`: the T * k pairs sorted by expert, each expert's run padded to a multiple
   of BLOCK_M (so a block of BLOCK_M rows belongs to one expert), on the device, with no host sync
   (up to MAX_PAIRS_ONE_PROGRAM pairs one Triton program, `_moe_align_kernel`; beyond, three
   kernels over chunks of pairs: count, scan, place; the torch sort is the reference and the CPU path);
2. one grouped GEMM over the stacked w13: block b multiplies its rows of x by w13[expert_ids[b]];
3. SiLU(gate) * up (aios/kernels/activation.py);
4. a second grouped GEMM over w2, each row scaled by its routing weight;
5. the k rows of each token summed.

Invariants (tests/test_fused_moe.py checks each): the Triton path equals the reference up to fp32
summation order (fp32 dots are IEEE, no TF32); padding rows (the sentinel T * k) read nothing and
write nothing; no host sync, so decode steps replay inside a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from aios.kernels.activation import silu_and_mul, silu_and_mul_ref


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
def _moe_align_kernel(
    topk_ids_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, num_pairs, num_blocks,
    NUM_EXPERTS: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_BLOCKS: tl.constexpr,
):
    """moe_align_block_size for a few pairs (decode) in one program: comparison matrices instead of a
    sort, so the layout is one launch instead of about twenty small torch kernels."""
    pairs = tl.arange(0, BLOCK_PAIRS)
    mask_p = pairs < num_pairs
    ids = tl.load(topk_ids_ptr + pairs, mask=mask_p, other=NUM_EXPERTS).to(tl.int32)   # [P]
    experts = tl.arange(0, BLOCK_E)
    is_e = ids[:, None] == experts[None, :]                                           # [P, E]
    counts = tl.sum(is_e.to(tl.int32), axis=0)
    counts = tl.where(experts < NUM_EXPERTS, counts, 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, axis=0)
    start = tl.sum(tl.where(is_e, (padded_end - padded)[None, :], 0), axis=1)          # [P]: its expert's start
    earlier = (ids[:, None] == ids[None, :]) & (pairs[None, :] < pairs[:, None])       # [P, P]
    rank = tl.sum(earlier.to(tl.int32), axis=1)                                        # place within its expert
    tl.store(sorted_token_ids_ptr + start + rank, pairs, mask=mask_p)
    blocks = tl.arange(0, BLOCK_BLOCKS)
    done = (padded_end[None, :] <= (blocks * BLOCK_M)[:, None]) & (experts[None, :] < NUM_EXPERTS)
    expert_of_block = tl.minimum(tl.sum(done.to(tl.int32), axis=1), NUM_EXPERTS - 1)
    tl.store(expert_ids_ptr + blocks, expert_of_block, mask=blocks < num_blocks)
    tl.store(num_tokens_post_padded_ptr, tl.sum(padded, axis=0))


@triton.jit
def _moe_count_kernel(topk_ids_ptr, counts_ptr, num_pairs,
                      NUM_EXPERTS: tl.constexpr, BLOCK_PAIRS: tl.constexpr, BLOCK_E: tl.constexpr):
    """counts[c, e] = pairs of chunk c routed to expert e (one program per chunk of BLOCK_PAIRS)."""
    chunk = tl.program_id(0)
    pairs = chunk * BLOCK_PAIRS + tl.arange(0, BLOCK_PAIRS)
    ids = tl.load(topk_ids_ptr + pairs, mask=pairs < num_pairs, other=NUM_EXPERTS).to(tl.int32)
    experts = tl.arange(0, BLOCK_E)
    counts = tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), axis=0)
    tl.store(counts_ptr + chunk * NUM_EXPERTS + experts, counts, mask=experts < NUM_EXPERTS)


@triton.jit
def _moe_scan_kernel(counts_ptr, offsets_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, num_chunks, num_blocks,
                     NUM_EXPERTS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_BLOCKS: tl.constexpr):
    """One program: offsets[c, e] = where chunk c's first pair of expert e goes (its expert's padded
    start plus the pairs of e in chunks before c); the expert of every block; the rows in use.
    A tile of BLOCK_C chunks at a time, scanned along the chunks with tl.cumsum."""
    experts = tl.arange(0, BLOCK_E)
    mask_e = experts < NUM_EXPERTS
    running = tl.zeros([BLOCK_E], dtype=tl.int32)
    for c0 in range(0, num_chunks, BLOCK_C):          # pass 1: exclusive prefix over chunks, per expert
        chunks = c0 + tl.arange(0, BLOCK_C)
        ptrs = chunks[:, None] * NUM_EXPERTS + experts[None, :]
        mask = (chunks[:, None] < num_chunks) & mask_e[None, :]
        counts = tl.load(counts_ptr + ptrs, mask=mask, other=0)
        inclusive = tl.cumsum(counts, axis=0)
        tl.store(offsets_ptr + ptrs, running[None, :] + inclusive - counts, mask=mask)
        running += tl.sum(counts, axis=0)
    padded = (running + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, axis=0)
    padded_start = padded_end - padded
    for c0 in range(0, num_chunks, BLOCK_C):          # pass 2: add each expert's padded start
        chunks = c0 + tl.arange(0, BLOCK_C)
        ptrs = offsets_ptr + chunks[:, None] * NUM_EXPERTS + experts[None, :]
        mask = (chunks[:, None] < num_chunks) & mask_e[None, :]
        tl.store(ptrs, tl.load(ptrs, mask=mask, other=0) + padded_start[None, :], mask=mask)
    for b0 in range(0, num_blocks, BLOCK_BLOCKS):
        blocks = b0 + tl.arange(0, BLOCK_BLOCKS)
        done = (padded_end[None, :] <= (blocks * BLOCK_M)[:, None]) & mask_e[None, :]
        expert_of_block = tl.minimum(tl.sum(done.to(tl.int32), axis=1), NUM_EXPERTS - 1)
        tl.store(expert_ids_ptr + blocks, expert_of_block, mask=blocks < num_blocks)
    tl.store(num_tokens_post_padded_ptr, tl.sum(padded, axis=0))


@triton.jit
def _moe_place_kernel(topk_ids_ptr, offsets_ptr, sorted_token_ids_ptr, num_pairs,
                      NUM_EXPERTS: tl.constexpr, BLOCK_PAIRS: tl.constexpr):
    """Each pair of chunk c to offsets[c, its expert] + the pairs of its expert before it in the chunk:
    ascending within an expert, as the sort gives."""
    chunk = tl.program_id(0)
    local = tl.arange(0, BLOCK_PAIRS)
    pairs = chunk * BLOCK_PAIRS + local
    mask_p = pairs < num_pairs
    ids = tl.load(topk_ids_ptr + pairs, mask=mask_p, other=NUM_EXPERTS).to(tl.int32)
    earlier = (ids[:, None] == ids[None, :]) & (local[None, :] < local[:, None])
    rank = tl.sum(earlier.to(tl.int32), axis=1)
    start = tl.load(offsets_ptr + chunk * NUM_EXPERTS + ids, mask=mask_p, other=0)
    tl.store(sorted_token_ids_ptr + start + rank, pairs, mask=mask_p)


MAX_PAIRS_ONE_PROGRAM = 256          # up to 32 decode tokens at top-8; more go through the chunked kernels
CHUNK_PAIRS = 128                    # pairs per program of the chunked layout


def moe_align_block_size(topk_ids: torch.Tensor, block_m: int, num_experts: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grouped GEMM's layout of the T * k (token, expert) pairs, computed on the device.

    Returns
    - sorted_token_ids [max_padded]: pair indices (t * k + j) grouped by expert, ascending within an
      expert, each expert's group padded to a multiple of block_m with the sentinel T * k;
    - expert_ids [max_padded // block_m]: the expert of each block of block_m rows;
    - num_tokens_post_padded [1]: rows in use (the rest of sorted_token_ids is sentinel).
    max_padded = T*k + min(T*k, E) * (block_m - 1) rounded up to block_m: the most the padding can
    take, fixed by the shapes alone (no host sync: the routing is only known on the device).
    """
    num_pairs = topk_ids.numel()
    max_padded = triton.cdiv(num_pairs + min(num_pairs, num_experts) * (block_m - 1), block_m) * block_m
    if topk_ids.is_cuda:
        if num_pairs <= MAX_PAIRS_ONE_PROGRAM:
            return _moe_align_one_program(topk_ids, block_m, num_experts, max_padded)
        return _moe_align_chunked(topk_ids, block_m, num_experts, max_padded)
    return moe_align_block_size_ref(topk_ids, block_m, num_experts, max_padded)


def moe_align_block_size_ref(topk_ids: torch.Tensor, block_m: int, num_experts: int, max_padded: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """moe_align_block_size in torch ops (a stable sort by expert): the spec, and the CPU path."""
    num_pairs = topk_ids.numel()
    flat = topk_ids.flatten().long()                                       # [M]: expert of pair t*k+j
    device = flat.device
    counts = torch.zeros(num_experts, dtype=torch.long, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))                    # pairs per expert
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = padded.cumsum(0)
    padded_start = padded_end - padded
    start = counts.cumsum(0) - counts
    order = torch.sort(flat, stable=True).indices                          # pairs sorted by expert
    expert_of_sorted = flat[order]
    rank_in_expert = torch.arange(num_pairs, device=device) - start[expert_of_sorted]
    sorted_token_ids = torch.full((max_padded,), num_pairs, dtype=torch.int32, device=device)
    sorted_token_ids[padded_start[expert_of_sorted] + rank_in_expert] = order.to(torch.int32)
    block_starts = torch.arange(0, max_padded, block_m, device=device)
    expert_ids = torch.searchsorted(padded_end, block_starts, right=True).clamp_(max=num_experts - 1)
    return sorted_token_ids, expert_ids.to(torch.int32), padded_end[-1:].to(torch.int32)


def _moe_align_chunked(topk_ids: torch.Tensor, block_m: int, num_experts: int, max_padded: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layout of many pairs (prefill, large decode batches) in four launches, no host sync."""
    num_pairs, num_blocks = topk_ids.numel(), max_padded // block_m
    num_chunks = triton.cdiv(num_pairs, CHUNK_PAIRS)
    device, flat = topk_ids.device, topk_ids.reshape(-1)
    block_e = max(16, triton.next_power_of_2(num_experts))
    counts = torch.empty(num_chunks, num_experts, dtype=torch.int32, device=device)
    offsets = torch.empty_like(counts)
    sorted_token_ids = torch.full((max_padded,), num_pairs, dtype=torch.int32, device=device)
    expert_ids = torch.empty(num_blocks, dtype=torch.int32, device=device)
    num_post = torch.empty(1, dtype=torch.int32, device=device)
    _moe_count_kernel[(num_chunks,)](flat, counts, num_pairs, NUM_EXPERTS=num_experts, BLOCK_PAIRS=CHUNK_PAIRS,
                                     BLOCK_E=block_e, num_warps=4)
    _moe_scan_kernel[(1,)](counts, offsets, expert_ids, num_post, num_chunks, num_blocks, NUM_EXPERTS=num_experts,
                           BLOCK_M=block_m, BLOCK_E=block_e, BLOCK_C=max(1, 8192 // block_e), BLOCK_BLOCKS=64,
                           num_warps=4)
    _moe_place_kernel[(num_chunks,)](flat, offsets, sorted_token_ids, num_pairs, NUM_EXPERTS=num_experts,
                                     BLOCK_PAIRS=CHUNK_PAIRS, num_warps=4)
    return sorted_token_ids, expert_ids, num_post


def _moe_align_one_program(topk_ids: torch.Tensor, block_m: int, num_experts: int, max_padded: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num_pairs, num_blocks = topk_ids.numel(), max_padded // block_m
    device = topk_ids.device
    sorted_token_ids = torch.full((max_padded,), num_pairs, dtype=torch.int32, device=device)
    expert_ids = torch.empty(num_blocks, dtype=torch.int32, device=device)
    num_post = torch.empty(1, dtype=torch.int32, device=device)
    _moe_align_kernel[(1,)](
        topk_ids.reshape(-1), sorted_token_ids, expert_ids, num_post, num_pairs, num_blocks,
        NUM_EXPERTS=num_experts, BLOCK_M=block_m, BLOCK_PAIRS=max(16, triton.next_power_of_2(num_pairs)),
        BLOCK_E=max(16, triton.next_power_of_2(num_experts)),
        BLOCK_BLOCKS=max(16, triton.next_power_of_2(num_blocks)), num_warps=4,
    )
    return sorted_token_ids, expert_ids, num_post


@triton.jit
def _fused_moe_kernel(
    a_ptr, b_ptr, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    N, K, num_pairs,
    stride_am, stride_be, stride_bn, stride_bk, stride_cm,
    A_ROWS_PER_PAIR: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """C[pair] = A[pair // A_ROWS_PER_PAIR] @ B[expert]^T for the BLOCK_M pairs of one block
    (times the pair's routing weight if MUL_ROUTED_WEIGHT), one BLOCK_N slice of N per program."""
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
    for k in range(0, K, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(a_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_cols + offs_k[:, None] * stride_bk, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:      # Triton's CPU interpreter multiplies bf16 tiles as raw uint16; fp32 there is exact
            acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(a, b, input_precision=PRECISION)
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + pair, mask=mask_m, other=0.0)
        acc = acc * w.to(tl.float32)[:, None]
    c = c_ptr + pair.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def fused_moe_config(num_pairs: int, device: torch.device) -> dict:
    """Tile sizes: small row blocks when few pairs per expert (decode), larger for prefill."""
    if device.type != "cuda":
        return dict(block_m=16, block_n=32, block_k=32, num_warps=4)
    block_m = 16 if num_pairs <= 64 else (32 if num_pairs <= 1024 else 64)
    return dict(block_m=block_m, block_n=64, block_k=64, num_warps=4, num_stages=3)


def _grouped_gemm(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, num_pairs,
                  a_rows_per_pair, mul_routed_weight, cfg) -> None:
    n, k = b.shape[1], b.shape[2]
    grid = (sorted_token_ids.numel() // cfg["block_m"], triton.cdiv(n, cfg["block_n"]))
    extra = {"num_stages": cfg["num_stages"]} if "num_stages" in cfg else {}
    _fused_moe_kernel[grid](
        a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
        n, k, num_pairs,
        a.stride(0), b.stride(0), b.stride(1), b.stride(2), c.stride(0),
        A_ROWS_PER_PAIR=a_rows_per_pair, MUL_ROUTED_WEIGHT=mul_routed_weight,
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        PRECISION="ieee" if a.dtype == torch.float32 else "tf32", UPCAST=a.device.type != "cuda",
        num_warps=cfg["num_warps"], **extra,
    )


def fused_moe(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, block_m: int | None = None) -> torch.Tensor:
    """Triton version of fused_moe_ref: only the routed pairs, sorted by expert, two grouped GEMMs."""
    num_tokens, hidden = hidden_states.shape
    num_experts, two_i, _ = w13.shape
    top_k = topk_ids.shape[1]
    num_pairs = num_tokens * top_k
    assert hidden_states.stride(1) == 1 and w13.stride(2) == 1 and w2.stride(2) == 1
    if num_tokens == 0:
        return torch.zeros_like(hidden_states)
    cfg = fused_moe_config(num_pairs, hidden_states.device)
    if block_m is not None:
        cfg["block_m"] = block_m
    sorted_token_ids, expert_ids, num_post = moe_align_block_size(topk_ids, cfg["block_m"], num_experts)
    weights = topk_weights.reshape(-1).contiguous()                        # [T * k], pair order
    gate_up = torch.empty(num_pairs, two_i, dtype=hidden_states.dtype, device=hidden_states.device)
    _grouped_gemm(hidden_states, w13, gate_up, weights, sorted_token_ids, expert_ids, num_post, num_pairs,
                  top_k, False, cfg)                                       # row t*k+j reads token t
    act = (silu_and_mul if hidden_states.is_cuda else silu_and_mul_ref)(gate_up)   # [T * k, I]
    down = torch.empty(num_pairs, hidden, dtype=hidden_states.dtype, device=hidden_states.device)
    _grouped_gemm(act, w2, down, weights, sorted_token_ids, expert_ids, num_post, num_pairs, 1, True, cfg)
    return down.view(num_tokens, top_k, hidden).sum(dim=1)                 # [T, H]
