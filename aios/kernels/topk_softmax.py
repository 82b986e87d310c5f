"""The MoE router's choice in one launch: softmax over the router logits, top-k, renormalize (lesson 16).

    router_logits [T, E] (any float dtype) -> topk_weights [T, k] (fp32), topk_ids [T, k] (int32)
    probs = softmax(router_logits, fp32); the k largest probs per token, largest first;
    with `renormalize` (HF's norm_topk_prob) the k weights divided by their sum.

`topk_softmax_ref` is the spec (HF's Qwen3MoeTopKRouter op for op, as `select_experts` in
aios/layers/fused_moe.py, without its final cast: the weights stay fp32 and the ids are int32, what
the fused experts read). `topk_softmax` is one Triton program per BLOCK_T tokens instead of the
reference's five or six small torch kernels (softmax, topk's select and sort, sum, divide, cast).

Ties, and what is guaranteed (tests/test_topk_softmax.py checks each):
- The kernel picks the k largest probabilities, equal ones in ascending expert id, and lists them
  by (probability descending, id ascending). On CUDA that is torch.topk's set exactly: its gather
  takes every value above the k-th and then the lowest ids equal to it. Within a run of equal
  probabilities torch's order can differ (it sorts the k with an unstable bitonic sort); that
  permutes equal weights only, so the experts, their weights and the MoE's output are the same up
  to the order of the final fp32 sum over k.
- On a CPU torch.topk breaks ties in its heap's order (e.g. all-zero logits do not give ids
  0..k-1), so where the k-th and (k+1)-th probabilities are equal the reference on a CPU may choose
  another of the tied experts; the weights are the same values either way.
- The probabilities are computed as torch's CUDA softmax does (exp(x - max) with the accurate exp,
  libdevice's expf, then divided by the sum), so they equal the reference's to an ulp or two (the
  sum's order); only probabilities that close can be ranked differently. Equal logits give equal
  probabilities in both.
- Every id is in [0, E), whatever the logits (NaN included), so the experts' kernels never read
  outside their weights. No host sync: the kernel replays inside a CUDA graph.

Why the router's matmul is not fused in: at batch 1 it is a 128 x 2048 gemv (512 KB of weights),
which the streaming gemv spreads over many programs (aios/kernels/gemv.py, launched with PDL); the
softmax needs the whole row, so fusing would mean either one program reading all 512 KB, or a
cross-program reduction (an atomic counter, the last program finishing the row), which
aios/kernels/NOTES.md measured slower than two launches for decode attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.language.extra import libdevice

from aios.kernels.pdl import pdl_enabled, wait_for_previous_kernel


def topk_softmax_ref(router_logits: torch.Tensor, top_k: int, renormalize: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(topk_weights [T, k] fp32, topk_ids [T, k] int32) from router_logits [T, E]: the spec."""
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float)
    topk_weights, topk_ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        topk_weights /= topk_weights.sum(dim=-1, keepdim=True)
    return topk_weights, topk_ids.to(torch.int32)


@triton.jit
def _topk_softmax_kernel(
    logits_ptr, weights_ptr, ids_ptr, num_tokens, stride_t,
    NUM_EXPERTS: tl.constexpr, TOP_K: tl.constexpr, RENORMALIZE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISE_EXP: tl.constexpr, USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_t = tokens < num_tokens
    experts = tl.arange(0, BLOCK_E)
    mask_e = experts < NUM_EXPERTS
    x = tl.load(logits_ptr + tokens.to(tl.int64)[:, None] * stride_t + experts[None, :],
                mask=mask_t[:, None] & mask_e[None, :], other=float("-inf")).to(tl.float32)   # [T, E]
    x = tl.where(mask_t[:, None], x, 0.0)                            # rows past num_tokens: no -inf - -inf
    shifted = x - tl.max(x, axis=1)[:, None]
    if PRECISE_EXP:
        num = libdevice.exp(shifted)          # CUDA's expf, what torch's softmax calls (tl.exp is ex2.approx)
    else:
        num = tl.exp(shifted)                 # the CPU interpreter: numpy's exp
    num = tl.where(mask_e[None, :], num, 0.0)
    probs = num / tl.sum(num, axis=1)[:, None]
    probs = tl.where(mask_e[None, :], probs, -1.0)                   # padding experts never win
    slots = tl.arange(0, BLOCK_K)
    topk_weights = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
    topk_ids = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.int32)
    total = tl.zeros([BLOCK_T], dtype=tl.float32)
    for j in tl.static_range(TOP_K):                                # k rounds of argmax, lowest id on ties
        best = tl.max(probs, axis=1)                                 # [T]
        best_id = tl.min(tl.where(probs == best[:, None], experts[None, :], BLOCK_E), axis=1)
        best_id = tl.minimum(best_id, NUM_EXPERTS - 1)               # NaN rows match nothing: stay in range
        topk_weights = tl.where(slots[None, :] == j, best[:, None], topk_weights)
        topk_ids = tl.where(slots[None, :] == j, best_id[:, None], topk_ids)
        total += best
        probs = tl.where(experts[None, :] == best_id[:, None], -2.0, probs)
    if RENORMALIZE:
        topk_weights = topk_weights / total[:, None]
    out = tokens.to(tl.int64)[:, None] * TOP_K + slots[None, :]
    mask = mask_t[:, None] & (slots < TOP_K)[None, :]
    tl.store(weights_ptr + out, topk_weights, mask=mask)
    tl.store(ids_ptr + out, topk_ids, mask=mask)


def topk_softmax(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of topk_softmax_ref: one launch, no host sync."""
    num_tokens, num_experts = router_logits.shape
    assert router_logits.stride(1) == 1 and 1 <= top_k <= num_experts
    device = router_logits.device
    topk_weights = torch.empty(num_tokens, top_k, dtype=torch.float32, device=device)
    topk_ids = torch.empty(num_tokens, top_k, dtype=torch.int32, device=device)
    if num_tokens == 0:
        return topk_weights, topk_ids
    block_e = triton.next_power_of_2(num_experts)
    block_t = max(1, min(triton.next_power_of_2(num_tokens), 4096 // block_e, 16))   # <= 4096 probs a program
    pdl = pdl_enabled(device)
    _topk_softmax_kernel[(triton.cdiv(num_tokens, block_t),)](
        router_logits, topk_weights, topk_ids, num_tokens, router_logits.stride(0),
        NUM_EXPERTS=num_experts, TOP_K=top_k, RENORMALIZE=renormalize,
        BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_K=triton.next_power_of_2(top_k),
        PRECISE_EXP=device.type == "cuda", USE_PDL=pdl, num_warps=4, launch_pdl=pdl,
    )
    return topk_weights, topk_ids
