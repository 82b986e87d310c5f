"""Lesson 05: a KV cache allocated once and written by position; RMSNorm fused with the residual add.

Check: python lessons/check.py 05
"""

import torch


class StaticKVCache:
    """One K tensor and one V tensor, self.k and self.v, each [num_layers, max_len, num_kv_heads,
    head_dim] of `dtype` on `device`, allocated in __init__ and never reallocated."""

    def __init__(self, num_layers: int, max_len: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str = "cpu") -> None:
        raise NotImplementedError("lesson 05: StaticKVCache (see README, 'Build it')")

    def update(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k, v [num_new, num_kv_heads, head_dim] in place at `positions` of `layer`, and return
        views (no copy) of that layer's K and V at positions 0 .. positions[-1], the cache so far.
        (lessons/05_preallocated_kv_cache/README.md, "Build it")"""
        raise NotImplementedError("lesson 05: StaticKVCache.update (see README, 'Build it')")


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual), x + residual), rounding where HuggingFace's Qwen3RMSNorm rounds:
    the add in x's dtype; then in float32, h * rsqrt(mean(h ** 2 over the last dim) + eps); that
    result cast back to x's dtype; then times weight (so the output has the promoted dtype of
    weight and x). x, residual [num_tokens, hidden]; weight [hidden]. Never write the inputs."""
    raise NotImplementedError("lesson 05: fused_add_rms_norm (see README, 'Build it')")
