"""Lesson 03's teaching loop: generate with our own modules (Qwen3, Llama 3, Qwen2, Mistral), with NO KV cache.

Slow on purpose. Every step runs the WHOLE sequence (prompt + everything generated so far)
through the model again, to get the logits of one new token. That is what the model computes
when nothing is remembered between steps; lesson 04 removes the waste.

The model is lesson 03's own (unfused_model.py: one nn.Linear per checkpoint tensor, one device),
its weights copied in by name by `aios.utils.loader.load_model` (`load_unfused`). This file is below
the engine's floor: attention here is plain torch over contiguous K/V tensors, not the engine's
paged kernels. `forward` also runs aios's fused modules of the same families (`load`; lessons 01, 06,
10 and 12 use it), and takes an optional `cache` (None here; lessons 04 and 05 pass one).
"""

from __future__ import annotations

import torch

from aios.config import ModelConfig
from aios.kernels import qk_norm_rope_ref, rope_ref
from aios.models.registry import build_model
from aios.utils.loader import load_model
from lessons.common import load_module

unfused_model = load_module("03_own_the_model/unfused_model.py")


def load_unfused(model_dir: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Lesson 03's own module (unfused_model.py), the checkpoint's tensors copied in by name."""
    model = unfused_model.build(model_dir, device, dtype)
    load_model(model, model_dir)
    return model.eval()


def load(model_dir: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """aios's module of the checkpoint's family with its safetensors loaded into it (fused q/k/v,
    gate/up: lesson 10); the same families as lesson 03's own model."""
    config = ModelConfig.from_dir(model_dir)
    unfused_model.check_family(config, model_dir)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = build_model(config)
    finally:
        torch.set_default_dtype(old)
    load_model(model, model_dir)
    return model.eval()


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     sliding_window: int | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v with a causal mask; the queries are the LAST len(q) of len(k) positions.

    q [num_q, num_heads, head_dim]; k, v [num_k, num_kv_heads, head_dim] -> [num_q, num_heads, head_dim]
    sliding_window W (Mistral): the query at position p sees only keys p - W < j <= p (HF's mask).
    """
    num_q, num_heads, _ = q.shape
    num_k, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads                  # GQA: each kv head serves `group` query heads
    k = k.repeat_interleave(group, dim=1)              # [num_k, num_heads, head_dim]
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale       # [num_heads, num_q, num_k]
    q_pos = torch.arange(num_k - num_q, num_k, device=q.device)
    k_pos = torch.arange(num_k, device=q.device)
    masked = k_pos[None, :] > q_pos[:, None]                                  # [num_q, num_k]: the future
    if sliding_window is not None:
        masked |= k_pos[None, :] <= q_pos[:, None] - sliding_window            # slid out of the window
    scores = scores.masked_fill(masked, float("-inf"))
    probs = scores.softmax(dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def project_qkv(attn, h: torch.Tensor):
    """q, k, v of h: three matmuls in lesson 03's model, one matmul split in three in aios's (lesson 10)."""
    if hasattr(attn, "qkv_proj"):
        return attn.qkv_proj(h).split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    return attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)


@torch.inference_mode()
def forward(model, input_ids: torch.Tensor, positions: torch.Tensor, cache=None,
            fused_norm: bool = False) -> torch.Tensor:
    """Logits of the last token. input_ids, positions: [num_tokens].

    cache: None (lesson 03: attend only to these tokens), or an object whose
    `update(layer_idx, positions, k, v)` stores this step's K/V and returns all K/V so far (lessons 04, 05).
    fused_norm: lesson 05 calls RMSNorm(x, residual), which adds and normalizes in one kernel on a GPU.
    """
    cos_sin_cache = model.model.rotary_emb.cos_sin_cache                       # one RoPE table, every layer
    window = model.config.sliding_window                                       # Mistral's; None: full attention
    hidden = model.model.embed_tokens(input_ids)                                # [num_tokens, hidden]
    residual = None
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        # pre-attention norm (the residual add of the previous layer's MLP, fused or not)
        if residual is None:
            residual, h = hidden, layer.input_layernorm(hidden)
        elif fused_norm:
            h, residual = layer.input_layernorm(hidden, residual)
        else:
            residual = hidden + residual
            h = layer.input_layernorm(residual)
        q, k, v = project_qkv(attn, h)
        q = q.view(-1, attn.num_heads, attn.head_dim)                         # [num_tokens, heads, head_dim]
        k = k.view(-1, attn.num_kv_heads, attn.head_dim)
        v = v.view(-1, attn.num_kv_heads, attn.head_dim)
        if getattr(attn, "q_norm", None) is not None:                            # Qwen3: norm each head, then RoPE
            q, k = qk_norm_rope_ref(q, k, attn.q_norm.weight, attn.k_norm.weight, positions, cos_sin_cache,
                                    attn.q_norm.eps)
        else:                                                                  # Llama, Qwen2, Mistral: RoPE only
            q, k = rope_ref(q, positions, cos_sin_cache), rope_ref(k, positions, cos_sin_cache)
        if cache is not None:
            k, v = cache.update(i, positions, k, v)                            # every position so far
        o = causal_attention(q, k, v, attn.head_dim ** -0.5, window)
        hidden = attn.o_proj(o.reshape(len(input_ids), -1))
        # post-attention norm, then the MLP
        if fused_norm:
            h, residual = layer.post_attention_layernorm(hidden, residual)
        else:
            residual = hidden + residual
            h = layer.post_attention_layernorm(residual)
        hidden = layer.mlp(h)
    hidden = model.model.norm(hidden, residual)[0] if fused_norm else model.model.norm(hidden + residual)
    return model.compute_logits(hidden[-1:])[0]                                 # [vocab]


def generate_no_cache(model, prompt_ids: list[int], max_tokens: int) -> tuple[list[int], int]:
    """Greedy decoding that recomputes everything each step. Returns (new tokens, tokens computed)."""
    device = model.lm_head.weight.device
    tokens = list(prompt_ids)
    computed = 0
    for _ in range(max_tokens):
        ids = torch.tensor(tokens, device=device)
        logits = forward(model, ids, torch.arange(len(tokens), device=device))
        computed += len(tokens)                   # the whole sequence, every step
        tokens.append(int(logits.argmax()))
    return tokens[len(prompt_ids):], computed
