"""HuggingFace transformers on a benchmark workload: static batches, left padding, SDPA attention.

Run by benchmark.py in its own process (so its memory never overlaps AIOS's). Static batches
(--batch-size) of requests sorted by output length, bf16, `generate` with min_new_tokens =
max_new_tokens (ignore_eos). Only requested tokens are counted.
"""

from __future__ import annotations

import glob
import os
import time

import torch

from aios.bench.peers.common import emit, peer_arg_parser, workload_from_args


def main() -> None:
    ap = peer_arg_parser(__doc__)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sort-by", choices=["output", "prompt"], default="output",
                    help="group sequences of similar output (or prompt) length into a batch")
    args = ap.parse_args()
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    wl = workload_from_args(args)
    prompts, max_tokens = wl.prompts[: args.limit], wl.max_tokens[: args.limit]
    if glob.glob(os.path.join(args.model, "*.safetensors")):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, attn_implementation="sdpa")
    else:
        config = AutoConfig.from_pretrained(args.model)
        config._attn_implementation = "sdpa"
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.cuda().eval()
    # A static batch runs until its longest request is done: grouping similar output lengths wastes
    # the fewest steps (only requested tokens are counted).
    length = (lambda i: max_tokens[i]) if args.sort_by == "output" else (lambda i: len(prompts[i]))
    order = sorted(range(len(prompts)), key=length)
    batches = [order[i: i + args.batch_size] for i in range(0, len(order), args.batch_size)]

    def run_batch(idx: list[int]) -> None:
        width = max(len(prompts[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        n = max(max_tokens[i] for i in idx)
        with torch.no_grad():
            model.generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=n, min_new_tokens=n,
                           do_sample=wl.temperature > 0, temperature=wl.temperature or None, top_p=None, top_k=None,
                           pad_token_id=0)

    run_batch(batches[0][:2])                                   # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for b in batches:
        run_batch(b)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    out_tokens = sum(max_tokens)
    emit({"engine": "hf", "version": transformers.__version__, "num_seqs": len(prompts),
          "batch_size": args.batch_size, "sort_by": args.sort_by, "elapsed_s": elapsed, "output_tokens": out_tokens,
          "output_tok_per_s": out_tokens / elapsed,
          "total_tok_per_s": (out_tokens + sum(map(len, prompts))) / elapsed,
          "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30})


if __name__ == "__main__":
    main()
