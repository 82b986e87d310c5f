"""The grouped GEMM's layout of an MoE layer's (token, expert) pairs, computed on the device (lesson 16).

    topk_ids [T, k] -> sorted_token_ids [max_padded], expert_ids [max_padded // block_m], num_tokens_post_padded [1]

The T * k pairs (pair t * k + j: token t's j-th expert) grouped by expert, ascending within an
expert, each expert's group padded to a multiple of block_m with the sentinel T * k, so that every
block of block_m rows belongs to one expert (`expert_ids[b]`). `max_padded` is fixed by the shapes
alone (the routing is only known on the device, and a CUDA graph needs fixed sizes).

`moe_align_block_size_ref` is the spec (a stable torch sort). `moe_align_block_size` runs Triton
kernels on any device (interpreted on a CPU; the engine's CPU path runs `fused_moe_ref`, which needs
no layout):
- up to MAX_PAIRS_ONE_PROGRAM pairs (decode: 32 tokens at top-8), one Triton program,
  `_moe_align_kernel`: comparison matrices instead of a sort, one launch;
- beyond, three kernels over chunks of CHUNK_PAIRS pairs: count, scan, place.

Invariants (tests/test_fused_moe.py checks each): the Triton layouts equal the reference, every
entry of the three outputs included; each entry is written exactly once, by one program (pairs,
the padding inside each expert's group and the sentinel tail are disjoint), so the outputs need
no fill launch before the kernels; no host sync. Launched with PDL on Hopper (aios/kernels/pdl.py):
every program waits before its first load.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel

MAX_PAIRS_ONE_PROGRAM = 256          # up to 32 decode tokens at top-8; more go through the chunked kernels
CHUNK_PAIRS = 128                    # pairs per program of the chunked layout
BLOCK_TAIL = 1024                    # sentinel entries stored per step of the tail loop


def max_padded_rows(num_pairs: int, block_m: int, num_experts: int) -> int:
    """The most rows the padded layout can take: T*k + min(T*k, E) * (block_m - 1), rounded up to block_m."""
    return triton.cdiv(num_pairs + min(num_pairs, num_experts) * (block_m - 1), block_m) * block_m


def moe_align_block_size(topk_ids: torch.Tensor, block_m: int, num_experts: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layout of topk_ids' pairs for blocks of block_m rows (see the module docstring):
    (sorted_token_ids, expert_ids, num_tokens_post_padded), int32, on topk_ids' device."""
    num_pairs = topk_ids.numel()
    max_padded = max_padded_rows(num_pairs, block_m, num_experts)
    if num_pairs <= MAX_PAIRS_ONE_PROGRAM:
        return _moe_align_one_program(topk_ids, block_m, num_experts, max_padded)
    return _moe_align_chunked(topk_ids, block_m, num_experts, max_padded)


def moe_align_block_size_ref(topk_ids: torch.Tensor, block_m: int, num_experts: int, max_padded: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """moe_align_block_size in torch ops (a stable sort by expert): the spec."""
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


@triton.jit
def _store_padding(sorted_token_ids_ptr, counts, padded, padded_end, experts, num_pairs, max_padded,
                   NUM_EXPERTS: tl.constexpr, BLOCK_PAD: tl.constexpr, BLOCK_TAIL: tl.constexpr):
    """The sentinel into every row that holds no pair: the last padded - counts rows (< block_m <=
    BLOCK_PAD) of each expert's group, then the tail [sum(padded), max_padded). Disjoint from the
    pairs' rows."""
    pad = tl.arange(0, BLOCK_PAD)
    group_rows = (padded_end - padded + counts)[:, None] + pad[None, :]               # [E, BLOCK_M]
    group_mask = (pad[None, :] < (padded - counts)[:, None]) & (experts < NUM_EXPERTS)[:, None]
    tl.store(sorted_token_ids_ptr + group_rows, tl.zeros_like(group_rows) + num_pairs, mask=group_mask)
    used = tl.sum(padded, axis=0)
    # (the loop's names are its own: Triton compiles a name re-bound in a loop to one type and shape)
    for q in range(0, max_padded - num_pairs, BLOCK_TAIL):      # used >= num_pairs: the tail starts after
        tail_rows = num_pairs + q + tl.arange(0, BLOCK_TAIL)
        tail_mask = (tail_rows >= used) & (tail_rows < max_padded)
        tl.store(sorted_token_ids_ptr + tail_rows, tl.zeros_like(tail_rows) + num_pairs, mask=tail_mask)


@triton.jit
def _moe_align_kernel(
    topk_ids_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, num_pairs, num_blocks,
    max_padded,
    NUM_EXPERTS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_PAD: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_BLOCKS: tl.constexpr, BLOCK_TAIL: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    """moe_align_block_size for a few pairs (decode) in one program: comparison matrices instead of a
    sort, so the layout is one launch instead of about twenty small torch kernels."""
    wait_for_previous_kernel(USE_PDL)
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
    _store_padding(sorted_token_ids_ptr, counts, padded, padded_end, experts, num_pairs, max_padded,
                   NUM_EXPERTS, BLOCK_PAD, BLOCK_TAIL)
    blocks = tl.arange(0, BLOCK_BLOCKS)
    done = (padded_end[None, :] <= (blocks * BLOCK_M)[:, None]) & (experts[None, :] < NUM_EXPERTS)
    expert_of_block = tl.minimum(tl.sum(done.to(tl.int32), axis=1), NUM_EXPERTS - 1)
    tl.store(expert_ids_ptr + blocks, expert_of_block, mask=blocks < num_blocks)
    tl.store(num_tokens_post_padded_ptr, tl.sum(padded, axis=0))


@triton.jit
def _moe_count_kernel(topk_ids_ptr, counts_ptr, num_pairs,
                      NUM_EXPERTS: tl.constexpr, BLOCK_PAIRS: tl.constexpr, BLOCK_E: tl.constexpr,
                      USE_PDL: tl.constexpr):
    """counts[c, e] = pairs of chunk c routed to expert e (one program per chunk of BLOCK_PAIRS)."""
    wait_for_previous_kernel(USE_PDL)
    chunk = tl.program_id(0)
    pairs = chunk * BLOCK_PAIRS + tl.arange(0, BLOCK_PAIRS)
    ids = tl.load(topk_ids_ptr + pairs, mask=pairs < num_pairs, other=NUM_EXPERTS).to(tl.int32)
    experts = tl.arange(0, BLOCK_E)
    counts = tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), axis=0)
    tl.store(counts_ptr + chunk * NUM_EXPERTS + experts, counts, mask=experts < NUM_EXPERTS)


@triton.jit
def _moe_scan_kernel(counts_ptr, offsets_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                     num_chunks, num_blocks, num_pairs, max_padded,
                     NUM_EXPERTS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_PAD: tl.constexpr, BLOCK_E: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_BLOCKS: tl.constexpr, BLOCK_TAIL: tl.constexpr,
                     USE_PDL: tl.constexpr):
    """One program: offsets[c, e] = where chunk c's first pair of expert e goes (its expert's padded
    start plus the pairs of e in chunks before c); the padding rows; the expert of every block; the
    rows in use. A tile of BLOCK_C chunks at a time, scanned along the chunks with tl.cumsum."""
    wait_for_previous_kernel(USE_PDL)
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
    _store_padding(sorted_token_ids_ptr, running, padded, padded_end, experts, num_pairs, max_padded,
                   NUM_EXPERTS, BLOCK_PAD, BLOCK_TAIL)
    for b0 in range(0, num_blocks, BLOCK_BLOCKS):
        blocks = b0 + tl.arange(0, BLOCK_BLOCKS)
        done = (padded_end[None, :] <= (blocks * BLOCK_M)[:, None]) & mask_e[None, :]
        expert_of_block = tl.minimum(tl.sum(done.to(tl.int32), axis=1), NUM_EXPERTS - 1)
        tl.store(expert_ids_ptr + blocks, expert_of_block, mask=blocks < num_blocks)
    tl.store(num_tokens_post_padded_ptr, tl.sum(padded, axis=0))


@triton.jit
def _moe_place_kernel(topk_ids_ptr, offsets_ptr, sorted_token_ids_ptr, num_pairs,
                      NUM_EXPERTS: tl.constexpr, BLOCK_PAIRS: tl.constexpr, USE_PDL: tl.constexpr):
    """Each pair of chunk c to offsets[c, its expert] + the pairs of its expert before it in the chunk:
    ascending within an expert, as the sort gives."""
    wait_for_previous_kernel(USE_PDL)
    chunk = tl.program_id(0)
    local = tl.arange(0, BLOCK_PAIRS)
    pairs = chunk * BLOCK_PAIRS + local
    mask_p = pairs < num_pairs
    ids = tl.load(topk_ids_ptr + pairs, mask=mask_p, other=NUM_EXPERTS).to(tl.int32)
    earlier = (ids[:, None] == ids[None, :]) & (local[None, :] < local[:, None])
    rank = tl.sum(earlier.to(tl.int32), axis=1)
    start = tl.load(offsets_ptr + chunk * NUM_EXPERTS + ids, mask=mask_p, other=0)
    tl.store(sorted_token_ids_ptr + start + rank, pairs, mask=mask_p)


def _layout_outputs(num_pairs: int, block_m: int, max_padded: int, device: torch.device):
    """Uninitialised: the kernels write every entry (no fill launch)."""
    return (torch.empty(max_padded, dtype=torch.int32, device=device),
            torch.empty(max_padded // block_m, dtype=torch.int32, device=device),
            torch.empty(1, dtype=torch.int32, device=device))


def _moe_align_chunked(topk_ids: torch.Tensor, block_m: int, num_experts: int, max_padded: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layout of many pairs (prefill, large decode batches) in three launches, no host sync."""
    num_pairs, num_blocks = topk_ids.numel(), max_padded // block_m
    num_chunks = triton.cdiv(num_pairs, CHUNK_PAIRS)
    device, flat = topk_ids.device, topk_ids.reshape(-1)
    block_e = max(16, triton.next_power_of_2(num_experts))
    counts = torch.empty(num_chunks, num_experts, dtype=torch.int32, device=device)
    offsets = torch.empty_like(counts)
    sorted_token_ids, expert_ids, num_post = _layout_outputs(num_pairs, block_m, max_padded, device)
    pdl = pdl_enabled(device)
    _moe_count_kernel[(num_chunks,)](flat, counts, num_pairs, NUM_EXPERTS=num_experts, BLOCK_PAIRS=CHUNK_PAIRS,
                                     BLOCK_E=block_e, USE_PDL=pdl, num_warps=4, launch_pdl=pdl)
    _moe_scan_kernel[(1,)](counts, offsets, sorted_token_ids, expert_ids, num_post, num_chunks, num_blocks,
                           num_pairs, max_padded, NUM_EXPERTS=num_experts, BLOCK_M=block_m,
                           BLOCK_PAD=triton.next_power_of_2(block_m), BLOCK_E=block_e,
                           BLOCK_C=max(1, 8192 // block_e), BLOCK_BLOCKS=64, BLOCK_TAIL=BLOCK_TAIL, USE_PDL=pdl,
                           num_warps=4, launch_pdl=pdl)
    _moe_place_kernel[(num_chunks,)](flat, offsets, sorted_token_ids, num_pairs, NUM_EXPERTS=num_experts,
                                     BLOCK_PAIRS=CHUNK_PAIRS, USE_PDL=pdl, num_warps=4, launch_pdl=pdl)
    return sorted_token_ids, expert_ids, num_post


def _moe_align_one_program(topk_ids: torch.Tensor, block_m: int, num_experts: int, max_padded: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num_pairs, num_blocks = topk_ids.numel(), max_padded // block_m
    sorted_token_ids, expert_ids, num_post = _layout_outputs(num_pairs, block_m, max_padded, topk_ids.device)
    pdl = pdl_enabled(topk_ids.device)
    _moe_align_kernel[(1,)](
        topk_ids.reshape(-1), sorted_token_ids, expert_ids, num_post, num_pairs, num_blocks, max_padded,
        NUM_EXPERTS=num_experts, BLOCK_M=block_m, BLOCK_PAD=triton.next_power_of_2(block_m),
        BLOCK_PAIRS=max(16, triton.next_power_of_2(num_pairs)),
        BLOCK_E=max(16, triton.next_power_of_2(num_experts)),
        BLOCK_BLOCKS=max(16, triton.next_power_of_2(num_blocks)), BLOCK_TAIL=BLOCK_TAIL, USE_PDL=pdl,
        num_warps=4, launch_pdl=pdl,
    )
    return sorted_token_ids, expert_ids, num_post
