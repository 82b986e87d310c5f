#!/usr/bin/env python
"""Lesson 03: own the model. Our own nn.Module (Qwen3, Llama 3, Qwen2, Mistral), weights loaded
straight from safetensors.

    HF transformers : lesson 02's baseline (its generate keeps a KV cache)
    ours, no cache  : our modules (unfused_model.py: one nn.Linear per checkpoint tensor, one device)
                      + the loader (aios.utils.loader.load_model), run by the teaching loop in
                      no_cache_loop.py, which recomputes the whole sequence for every new token.
                      Slow on purpose: lesson 04 fixes it.

Checks: the loaded weights give HF's logits (max |difference|) and the same greedy tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--max-tokens", type=int, default=None, help="default 128; 16 with --quick")
    args = common.setup(ap.parse_args())
    max_tokens = args.max_tokens or (16 if args.quick else 128)

    import torch
    import transformers
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    loop = common.load_module("03_own_the_model/no_cache_loop.py")
    transformers.utils.logging.disable_progress_bar()
    print(common.describe(args))
    if args.quick:
        print("--quick: a smoke test (few, short requests); its times say nothing about speed: run without it")

    common.heading("loading: checkpoint tensors -> our modules' parameters, by name (layer 0)")
    try:
        model = loop.load_unfused(args.model, args.device)
    except ValueError as e:                               # a family the teaching model does not compute
        sys.exit(f"error: {e}")
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    rows, total = [], 0
    for path in sorted(Path(args.model).glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                total += 1
                if name.startswith("model.layers.0."):
                    tensor = f.get_tensor(name)
                    module = type(modules[name.rsplit(".", 1)[0]]).__name__      # .weight, .bias
                    same = torch.equal(tensor.to(args.device), params[name])
                    rows.append([name.removeprefix("model.layers.0."), str(tuple(tensor.shape)), module,
                                 "yes" if same else "NO"])
    print(common.table(["checkpoint tensor = our parameter", "shape", "our module", "copied exactly"], rows))
    tied = " (lm_head shares embed_tokens' matrix)" if model.config.tie_word_embeddings else ""
    print(f"{total} checkpoint tensors into {len(set(map(id, params.values())))} parameters{tied}; "
          f"aios's engine model fuses q/k/v and gate/up into one matmul each (lesson 10)")

    tok = common.tokenizer(args)                          # a stand-in if the checkpoint has no tokenizer
    prompt = common.PROMPTS[0]
    ids = tok.encode(prompt, add_special_tokens=False)
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).eval()

    common.heading("same logits as HF?")
    x = torch.tensor(ids, device=args.device)
    with torch.no_grad():
        hf_logits = hf(x[None]).logits[0, -1]
    ours = loop.forward(model, x, torch.arange(len(ids), device=args.device))
    print(f"prompt {prompt!r}: max |ours - HF| over {len(ours):,} logits = {float((ours - hf_logits).abs().max()):.2e}")

    common.heading(f"generate {max_tokens} tokens, greedy")
    with torch.no_grad(), common.Timer(args.device) as t_hf:
        out = hf.generate(x[None], attention_mask=torch.ones_like(x[None]), max_new_tokens=max_tokens,
                          min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
    hf_tokens = out[0, len(ids):].tolist()
    with common.Timer(args.device) as t_ours:
        tokens, computed = loop.generate_no_cache(model, ids, max_tokens)
    print(common.table(["engine", "tokens computed", "seconds", "tok/s", "same tokens as HF"], [
        ["HF transformers (KV cache)", len(ids) + max_tokens - 1, t_hf.seconds, max_tokens / t_hf.seconds, "-"],
        ["our modules, no cache", computed, t_ours.seconds, max_tokens / t_ours.seconds,
         "yes" if tokens == hf_tokens else "NO"],
    ]))
    print(f"no cache computes {computed / (len(ids) + max_tokens - 1):.1f}x the tokens: step i runs all "
          f"{len(ids)} + i tokens again")
    shown = f"{tok.decode(ids)} -> " if args.skip_tokenizer_init else prompt
    print(f"\n{shown}{tok.decode(tokens)}")


if __name__ == "__main__":
    main()
