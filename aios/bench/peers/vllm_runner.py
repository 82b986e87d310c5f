"""vLLM on a benchmark workload, with random weights (load_format="dummy"), in its own process."""

from __future__ import annotations

import time

from aios.bench.peers.common import emit, peer_arg_parser, workload_from_args


def main() -> None:
    ap = peer_arg_parser(__doc__)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--enforce-eager", action="store_true")
    args = ap.parse_args()
    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    wl = workload_from_args(args)
    prompts, max_tokens = wl.prompts[: args.limit], wl.max_tokens[: args.limit]
    llm = LLM(model=args.model, load_format="dummy", skip_tokenizer_init=True, max_model_len=4096,
              gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager, seed=0)
    params = [SamplingParams(temperature=wl.temperature, max_tokens=n, ignore_eos=True, detokenize=False)
              for n in max_tokens]
    llm.generate([TokensPrompt(prompt_token_ids=[1, 2, 3])], SamplingParams(max_tokens=4, detokenize=False),
                 use_tqdm=False)
    t = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    elapsed = time.perf_counter() - t
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    ttfts = [o.metrics.first_token_time - o.metrics.arrival_time for o in outs
             if getattr(o, "metrics", None) is not None and getattr(o.metrics, "first_token_time", None)]
    emit({"engine": "vllm", "version": vllm.__version__, "num_seqs": len(prompts), "elapsed_s": elapsed,
          "output_tokens": out_tokens, "output_tok_per_s": out_tokens / elapsed,
          "total_tok_per_s": (out_tokens + sum(map(len, prompts))) / elapsed,
          "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
          "ttft_p50_s": sorted(ttfts)[len(ttfts) // 2] if ttfts else None})


if __name__ == "__main__":
    main()
