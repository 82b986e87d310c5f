#!/usr/bin/env python
"""Lesson 02: the baseline. HuggingFace transformers' generate vs aios.

    HF transformers : AutoModelForCausalLM.from_pretrained(...).generate(...), one prompt at a time
                      (the checkpoint's own family: Qwen3ForCausalLM, LlamaForCausalLM, ...)
    aios            : LLM(model).generate(...), one prompt at a time, then all prompts in one call

Greedy decoding, the same checkpoint, float32 on CPU: the tokens must be identical. HF is the
correctness oracle of every later lesson (tests/test_model_vs_hf.py); here it is also the speed
to beat.
"""

from __future__ import annotations

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--num-prompts", type=int, default=None, help="default 8; 2 with --quick")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 64; 12 with --quick")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (2 if args.quick else 8)
    max_tokens = args.max_tokens or (12 if args.quick else 64)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from aios import LLM, SamplingParams

    transformers.utils.logging.disable_progress_bar()
    print(common.describe(args) + f"   transformers {transformers.__version__}")
    if args.quick:
        print("--quick: a smoke test (few, short requests); its times say nothing about speed: run without it")
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    tok = common.tokenizer(args)                          # a stand-in if the checkpoint has no tokenizer
    prompts = [common.PROMPTS[i % len(common.PROMPTS)] for i in range(n)]
    prompt_ids = [tok.encode(p, add_special_tokens=False) for p in prompts]

    # --- HF transformers: the baseline -------------------------------------------------------
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device).eval()

    def hf_generate(ids: list[int]) -> list[int]:
        x = torch.tensor([ids], device=args.device)
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                              min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
        return out[0, len(ids):].tolist()

    hf_generate(prompt_ids[0][:2])                                                    # warm-up
    with common.Timer(args.device) as t_hf:
        hf_tokens = [hf_generate(ids) for ids in prompt_ids]

    # --- aios ------------------------------------------------------------------------------------
    llm = LLM(args.model, device=args.device, dtype=str(dtype).replace("torch.", ""),
              skip_tokenizer_init=args.skip_tokenizer_init)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(prompt_ids[:1], SamplingParams(max_tokens=2), use_tqdm=False)         # warm-up
    with common.Timer(args.device) as t_one:
        one = [llm.generate([ids], params, use_tqdm=False)[0]["token_ids"] for ids in prompt_ids]
    with common.Timer(args.device) as t_all:
        batched = [o["token_ids"] for o in llm.generate(prompt_ids, params, use_tqdm=False)]

    total = n * max_tokens
    common.heading(f"{n} prompts x {max_tokens} new tokens, greedy, {str(dtype).replace('torch.', '')}")
    print(common.table(["engine", "prompts at once", "seconds", "tok/s", "same tokens as HF"], [
        ["HF transformers generate", 1, t_hf.seconds, total / t_hf.seconds, "-"],
        ["aios LLM.generate", 1, t_one.seconds, total / t_one.seconds, "yes" if one == hf_tokens else "NO"],
        ["aios LLM.generate", n, t_all.seconds, total / t_all.seconds, "yes" if batched == hf_tokens else "NO"],
    ]))
    print(f"HF: {1000 * t_hf.seconds / total:.2f} ms per token at batch 1; "
          f"aios batch 1: {1000 * t_one.seconds / total:.2f} ms; aios batch {n}: {1000 * t_all.seconds / total:.2f} ms")

    common.heading("the first prompt, decoded from HF's tokens")
    shown = f"{tok.decode(prompt_ids[0])} -> " if args.skip_tokenizer_init else prompts[0]
    print(shown + tok.decode(hf_tokens[0]))


if __name__ == "__main__":
    main()
