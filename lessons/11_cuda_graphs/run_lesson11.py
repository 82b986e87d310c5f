#!/usr/bin/env python
"""Lesson 11: CUDA graphs and async scheduling: take the host off the GPU's critical path.

    eager       (lesson 10) : enforce_eager=True: every decode step launches each kernel from Python
    CUDA graphs (lesson 11) : enforce_eager=False: CUDAGraphRunner.capture records one graph
                              per batch size at start-up; a pure-decode step copies its inputs into
                              the graph's static buffers and replays it (CUDAGraphRunner.replay)
    async scheduling        : async_scheduling=True: the engine schedules and launches step N+1
                              before it reads step N's tokens back (LLMEngine.step)

On a CPU there is nothing to capture (graphs are a CUDA feature) and nothing to overlap (the CPU
runs the model itself), so every setting runs at the same speed; the script measures what the GPU
features remove: the kernels launched per step, and how little arithmetic each step has next to them.
"""

from __future__ import annotations

from lessons import common


def one_decode_step(llm, args) -> tuple[int, int | None, int | None]:
    """One decode step at batch 1: (torch ops through the dispatcher, kernels the GPU ran, launch
    calls the host made); the last two from the CUDA profiler, None on a CPU."""
    from aios import SamplingParams

    seq = llm.add_request(common.prompt(args, common.PROMPTS[0]),
                          SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    llm.step()                                                                         # prefill
    _, ops = common.count_kernels(llm.step)                                            # one decode step
    kernels = launches = None
    if args.device != "cpu":
        _, kernels, launches = common.count_gpu_kernels(llm.step)                      # the next one
    while not seq.is_finished:
        llm.step()
    return ops, kernels, launches


def main() -> None:
    args = common.setup(common.parser(__doc__).parse_args())

    import torch

    from aios import LLM, SamplingParams
    from aios.bench.ladder import OVERRIDES

    print(common.describe(args))
    max_tokens = 16 if args.quick else 128
    batch_sizes = [1, 4] if args.quick else [1, 8, 32]
    rows, tokens, launch_counts = [], {}, {}
    for lesson in ("10", "11"):
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init, **OVERRIDES[lesson])
        graphs = sorted(llm.model_runner.cuda_graphs.graphs)
        label = f"enforce_eager={llm.config.enforce_eager} (lesson {lesson})"
        for bs in batch_sizes:
            prompts = common.prompts(args, bs)
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
            llm.generate(prompts, SamplingParams(max_tokens=2), use_tqdm=False)          # warm-up
            with common.Timer(args.device) as t:
                outs = llm.generate(prompts, params, use_tqdm=False)
            tokens[lesson, bs] = [o["token_ids"] for o in outs]
            decode_s = t.seconds - max(o["metrics"]["ttft_s"] for o in outs)
            same = "-" if lesson == "10" else ("yes" if tokens[lesson, bs] == tokens["10", bs] else "NO")
            rows.append([label, bs, len(graphs), 1000 * decode_s / (max_tokens - 1), bs * max_tokens / t.seconds,
                         same])
        launch_counts[lesson] = one_decode_step(llm, args)
        if lesson == "10":
            cfg = llm.config.hf_config
            matmul_params = sum(p.numel() for p in llm.model_runner.model.parameters()) - \
                (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
        llm.close()
    common.heading(f"decode {max_tokens} tokens per sequence, greedy")
    print(common.table(["engine", "batch", "graphs captured", "ms per decode step", "tok/s", "same tokens"], rows))

    ms_step = rows[0][3]
    common.heading("what a decode step at batch 1 is made of")
    ops = launch_counts["10"][0]
    print(f"torch ops per decode step (enforce_eager=True): {ops:,}  (what torch's dispatcher sees; on a GPU each "
          f"is a kernel launch, and Triton kernels launch without passing through it)")
    if args.device != "cpu":
        for lesson in ("10", "11"):
            _, kernels, launches = launch_counts[lesson]
            print(f"lesson {lesson}, enforce_eager={lesson == '10'}: the GPU ran {kernels:,} kernels in one decode "
                  f"step; the host made {launches:,} kernel/graph launch calls (CUDA profiler)")
    print(f"arithmetic per decode step: ~{2 * matmul_params / 1e6:,.0f} MFLOPs (2 x {matmul_params:,} weights)")
    achieved = 2 * matmul_params / 1e6 / ms_step                                     # MFLOP/ms = GFLOP/s
    a = torch.randn(1024, 1024, device=args.device)
    a @ a
    with common.Timer(args.device) as t:
        for _ in range(5):
            a @ a
    peak = 5 * 2 * 1024 ** 3 / t.seconds / 1e9
    print(f"time per decode step at batch 1: {ms_step:.2f} ms -> {achieved:.1f} GFLOP/s")
    print(f"the same device on one 1024 x 1024 x 1024 matmul: {peak:,.1f} GFLOP/s -> the decode step uses "
          f"{100 * achieved / peak:.1f}% of it; the rest is per-op dispatch (a kernel launch on a GPU) and Python")
    if args.device == "cpu":
        print("(CPU: no graphs to capture, so both settings run the same eager loop; ModelRunner only "
              "captures graphs when the device is CUDA)")

    common.heading(f"async scheduling, lesson 11 settings, batch {batch_sizes[-1]}")
    prompts = common.prompts(args, batch_sizes[-1])
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    async_rows = []
    for flag in (False, True):
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init,
                  **{**OVERRIDES["11"], "async_scheduling": flag})
        llm.generate(prompts, SamplingParams(max_tokens=2), use_tqdm=False)              # warm-up
        with common.Timer(args.device) as t:
            outs = llm.generate(prompts, params, use_tqdm=False)
        same = "-" if not flag else ("yes" if [o["token_ids"] for o in outs] == tokens["11", batch_sizes[-1]]
                                     else "NO")
        async_rows.append([f"async_scheduling={flag}", t.seconds, len(prompts) * max_tokens / t.seconds, same])
        llm.close()
    print(common.table(["engine", "seconds", "tok/s", "same tokens"], async_rows))
    if args.device == "cpu":
        print("(CPU: the model runs on the host itself, so there is no GPU time to hide the scheduling behind)")


if __name__ == "__main__":
    main()
