"""Lesson 16: Mixture of Experts. A router picks k of E expert MLPs for each token; the layer runs
them and sums their outputs, weighted by the router.

Shapes: router_logits [T, E]; hidden_states [T, H]; w13 [E, 2 * I, H] (each expert's gate rows,
then its up rows); w2 [E, H, I]; topk_weights [T, k]; topk_ids [T, k].
Check: python lessons/check.py 16
"""

from __future__ import annotations

import torch


def select_experts(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's choice, in HuggingFace Qwen3-MoE's order: softmax over the E logits computed in
    float32, the top_k largest probabilities (torch.topk), divided by their sum if renormalize
    (norm_topk_prob), and cast back to router_logits' dtype. Returns (topk_weights, topk_ids), each
    [T, top_k]. (lessons/16_mixture_of_experts/README.md, "Build it")"""
    raise NotImplementedError("lesson 16: select_experts (see README, 'Build it')")


def moe_reference(hidden_states: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> torch.Tensor:
    """out[t] = sum over j of topk_weights[t, j] * expert_e(hidden_states[t]), e = topk_ids[t, j], where
    expert_e(x) = w2[e] @ (silu(gate) * up) and gate, up = the two halves of w13[e] @ x. Loop over the
    experts; returns [T, H] in hidden_states' dtype."""
    raise NotImplementedError("lesson 16: moe_reference (see README, 'Build it')")
