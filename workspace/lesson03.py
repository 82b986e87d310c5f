"""Lesson 03: own the model. Attention in plain torch, a loader from safetensors into your own
modules, and greedy generation with no cache.

The model is lesson 03's unfused decoder (lessons/03_own_the_model/unfused_model.py): one nn.Linear
per checkpoint tensor, named as in the checkpoint, on one device. Build one, empty, with
`unfused_model.build(model_dir)`.
Check: python lessons/check.py 03
"""

import torch
from torch import nn

from lessons.common import load_module

unfused_model = load_module("03_own_the_model/unfused_model.py")
forward = load_module("03_own_the_model/no_cache_loop.py").forward    # forward(model, input_ids, positions)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v, per query head.

    q [num_q, num_heads, head_dim]; k, v [num_k, num_kv_heads, head_dim] -> [num_q, num_heads, head_dim].
    The queries are the LAST num_q of the num_k positions (num_q == num_k for a whole prompt, 1 for a
    decode step): query i sits at position num_k - num_q + i and sees keys 0 .. that position.
    Grouped-query attention: query head h uses KV head h // (num_heads // num_kv_heads).
    Compute the softmax in float32; return q's dtype. (lessons/03_own_the_model/README.md, "Build it")"""
    raise NotImplementedError("lesson 03: causal_attention (see README, 'Build it')")


def load_weights(model: nn.Module, model_dir: str) -> None:
    """Copy every tensor of the checkpoint's *.safetensors files into the parameter of the same name
    (load_model's signature, aios/utils/loader.py). Afterwards every parameter was written exactly
    once; a tied lm_head shares embed_tokens' matrix, so the checkpoint may hold it under either
    name. Raise ValueError naming the tensor if a checkpoint tensor matches no parameter (ignore
    `rotary_emb.inv_freq`), and naming the parameters if any was never written."""
    raise NotImplementedError("lesson 03: load_weights (see README, 'Build it')")


def generate_no_cache(model: nn.Module, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding with no cache: each step runs the WHOLE sequence so far (prompt + tokens
    generated) through `forward(model, input_ids, positions)` (positions 0 .. len - 1), which returns
    the last position's logits [vocab], and appends their argmax. Returns the max_new_tokens new ids."""
    raise NotImplementedError("lesson 03: generate_no_cache (see README, 'Build it')")
