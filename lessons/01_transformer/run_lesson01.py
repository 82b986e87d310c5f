#!/usr/bin/env python
"""Lesson 01: what a Qwen3 is made of, counted two ways and checked.

    tokenizer  : text -> token ids -> text
    parameters : counted by formula from config.json vs counted from aios's nn.Module
    RoPE       : attention scores depend on the distance between positions, not where they are
    output     : one probability per vocabulary token for the next token

Then the same formula for Qwen3-0.6B, and what that means per generated token (FLOPs, KV bytes).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lessons import common


def formula(c) -> dict[str, int]:
    """Parameter count of each part of a Qwen3 (or a Llama 3, Qwen2, Mistral: no q/k norms, maybe
    biases), from its config alone."""
    h, i, d = c.hidden_size, c.intermediate_size, c.head_dim
    qkv = (h + c.qkv_bias) * d * (c.num_attention_heads + 2 * c.num_key_value_heads)   # fused q, k, v (+ biases)
    o = c.num_attention_heads * d * h + c.o_proj_bias * h
    qk_norm = 2 * d if c.model_type == "qwen3" else 0                   # Qwen3's per-head RMSNorm of q and k
    mlp = 3 * h * i + c.mlp_bias * (2 * i + h)                          # gate, up, down (+ biases)
    return {
        "embedding": c.vocab_size * h,
        "attention (all layers)": c.num_hidden_layers * (qkv + o + qk_norm),
        "MLP (all layers)": c.num_hidden_layers * mlp,
        "RMSNorms": c.num_hidden_layers * 2 * h + h,
        "LM head": 0 if c.tie_word_embeddings else c.vocab_size * h,
    }


def counted(model) -> dict[str, int]:
    """The same parts, counted from the module's parameters (tied weights counted once)."""
    parts = dict.fromkeys(formula(model.config), 0)
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "embed_tokens" in name:
            parts["embedding"] += p.numel()
        elif "self_attn" in name:
            parts["attention (all layers)"] += p.numel()
        elif "mlp" in name:
            parts["MLP (all layers)"] += p.numel()
        elif "norm" in name:
            parts["RMSNorms"] += p.numel()
        elif "lm_head" in name:
            parts["LM head"] += p.numel()
    return parts


def main() -> None:
    args = common.setup(common.parser(__doc__).parse_args())

    import torch

    from aios.assets import default_model_path
    from aios.bench.shapes import write_shape
    from aios.config import ModelConfig
    from aios.kernels import qk_norm_rope_ref
    from aios.models.qwen3 import Qwen3ForCausalLM

    loop = common.load_module("03_own_the_model/no_cache_loop.py")
    print(common.describe(args))

    common.heading("tokenizer")
    tok = common.tokenizer(args)
    text = "And the king said unto Moses, Behold"
    ids = tok.encode(text, add_special_tokens=False)
    print(f"text   : {text!r}  ({len(text)} characters)")
    print(f"ids    : {ids}  ({len(ids)} tokens, vocabulary {len(tok):,})")
    if args.skip_tokenizer_init:
        print(f"(no tokenizer in {Path(args.model).name}: common.TokenIds gives each word a fixed id)")
    else:
        print(f"pieces : {tok.convert_ids_to_tokens(ids)}   ('Ġ' is a leading space)")
        print(f"decoded: {tok.decode(ids)!r}")

    bundled = Path(args.model).resolve() == Path(default_model_path()).resolve()
    name = "bundled" if bundled else Path(args.model).name
    common.heading(f"parameters: formula vs nn.Module ({'the bundled model' if bundled else name})")
    try:
        model = loop.load(args.model, args.device)
    except ValueError as e:                               # Gemma 3, Qwen3-MoE: not this lesson's decoder
        sys.exit(f"error: {e}")
    c = model.config
    print(f"config: {c.num_hidden_layers} layers, hidden {c.hidden_size}, MLP {c.intermediate_size}, "
          f"{c.num_attention_heads} query heads / {c.num_key_value_heads} KV heads x head_dim {c.head_dim}, "
          f"vocab {c.vocab_size}, tied embeddings: {c.tie_word_embeddings}")
    f, m = formula(c), counted(model)
    rows = [[k, f[k], m[k], "yes" if f[k] == m[k] else "NO"] for k in f]
    rows.append(["total", sum(f.values()), sum(m.values()), "yes" if f == m else "NO"])
    print(common.table(["part", "formula", "nn.Module", "equal"], rows))

    common.heading("parameters: formula vs nn.Module (Qwen3-0.6B's config.json, no weights)")
    with tempfile.TemporaryDirectory() as tmp:
        big = ModelConfig.from_dir(write_shape("qwen3-0.6b", tmp))
    with torch.device("meta"):                                   # shapes only, no memory
        big_model = Qwen3ForCausalLM(big)
    fb, mb = formula(big), counted(big_model)
    rows = [[k, fb[k], mb[k]] for k in fb] + [["total", sum(fb.values()), sum(mb.values())]]
    print(common.table(["part", "formula", "nn.Module"], rows))
    for label, cfg, total in ((name, c, sum(f.values())), ("Qwen3-0.6B", big, sum(fb.values()))):
        matmul = total - cfg.vocab_size * cfg.hidden_size * (0 if cfg.tie_word_embeddings else 1)
        kv_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 2     # K and V, bf16
        print(f"{label:>10}: ~{2 * matmul / 1e6:,.0f} MFLOPs per token (2 x weights it multiplies), "
              f"weights {total * 2 / 2**20:,.0f} MiB in bf16, KV cache {kv_bytes / 1024:,.0f} KiB per token in bf16")

    common.heading("RoPE: the score q.k depends only on the distance between positions")
    attn, rope_table = model.model.layers[0].self_attn, model.model.rotary_emb.cos_sin_cache
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, attn.head_dim, generator=g).to(args.device)
    k = torch.randn(1, 1, attn.head_dim, generator=g).to(args.device)
    ones = torch.ones(attn.head_dim, device=args.device)

    def score(pos_q: int, pos_k: int) -> float:
        rq, _ = qk_norm_rope_ref(q, q, ones, ones, torch.tensor([pos_q], device=args.device),
                                 rope_table, 1e-6)
        rk, _ = qk_norm_rope_ref(k, k, ones, ones, torch.tensor([pos_k], device=args.device),
                                 rope_table, 1e-6)
        return float((rq * rk).sum())

    rows = [[pq, pk, pq - pk, score(pq, pk)] for pq, pk in ((5, 2), (105, 102), (1005, 1002), (5, 4), (105, 104))]
    print(common.table(["query pos", "key pos", "distance", "score q.k"], rows))

    common.heading("the output: a probability for every token of the vocabulary")
    prompt = "And the king said"
    ids = tok.encode(prompt, add_special_tokens=False)
    logits = loop.forward(model, torch.tensor(ids, device=args.device),
                          torch.arange(len(ids), device=args.device))
    probs = logits.float().softmax(-1)
    top = probs.topk(5)
    print(f"after {prompt!r} ({len(ids)} tokens), the 5 likeliest next tokens of {len(probs):,}:")
    print(common.table(["token", "probability"],
                       [[repr(tok.decode([int(i)])), float(p)] for p, i in zip(top.values, top.indices)]))
    print(f"(sum of all {len(probs):,} probabilities: {float(probs.sum()):.4f})")


if __name__ == "__main__":
    main()
