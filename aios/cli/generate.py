"""Generate text from a prompt with AIOS, streaming tokens to the terminal as they come.

    aios generate                                        # the small bundled model, on CPU or GPU
    aios generate --model /path/to/Qwen3-0.6B --prompt "Explain KV caching" --chat

(`python generate.py` in a clone runs the same.)
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="a HuggingFace checkpoint directory: Qwen3, Qwen3-MoE, Llama 3, Qwen2/2.5, Mistral or "
                         "Gemma 3 text (default: the bundled model)")
    ap.add_argument("--prompt", default="And the king said", help="the prompt text")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens to generate at most")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=-1)
    ap.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: by device)")
    ap.add_argument("--tp", type=int, default=1, help="tensor-parallel size (GPUs)")
    ap.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    ap.add_argument("--stats", action="store_true", help="print engine counters at the end")
    args = ap.parse_args(argv)

    from aios import LLM, SamplingParams

    t0 = time.perf_counter()
    try:
        llm = LLM(args.model, device=args.device, dtype=args.dtype, tensor_parallel_size=args.tp,
                  enforce_eager=args.enforce_eager, max_model_len=2048, max_num_seqs=8)
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                max_tokens=args.max_tokens, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    prompt = llm.apply_chat_template([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    if not args.chat:
        print(args.prompt, end="", flush=True)
    t1 = time.perf_counter()
    for piece in llm.stream(prompt, params):
        print(piece, end="", flush=True)
    dt = time.perf_counter() - t1
    n = llm.stats()["num_generated_tokens"]
    print()
    print(f"[{llm.config.device}, {str(llm.config.dtype).replace('torch.', '')}: load {load_s:.1f} s, "
          f"{n} tokens in {dt:.2f} s = {n / dt:.1f} tok/s]",
          file=sys.stderr)
    if args.stats:
        print(llm.stats(), file=sys.stderr)
    llm.close()
    return 0
