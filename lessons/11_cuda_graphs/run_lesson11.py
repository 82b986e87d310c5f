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
features remove: the operations launched per step (the same count at batch 1 and 32), how little
arithmetic each step has next to them, and shows which graph a decode batch would replay and the
padding rows it gets (CUDAGraphRunner.batch_size_for and replay, run on stand-in graphs on a CPU).

    --mine : the padding demo (and, on a GPU, the lesson 11 engine's graphs) use YOUR
             CUDAGraphRunner from workspace/lesson11.py
"""

from __future__ import annotations

from lessons import common


def one_decode_step(llm, args, batch: int = 1) -> tuple[int, int | None, int | None]:
    """One decode step at `batch` sequences: (torch ops through the dispatcher, kernels the GPU ran,
    launch calls the host made); the last two from the CUDA profiler, None on a CPU."""
    from aios import SamplingParams

    seqs = [llm.add_request(p, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
            for p in common.prompts(args, batch)]
    llm.step()                                                                         # prefill
    _, ops = common.count_kernels(llm.step)                                            # one decode step
    kernels = launches = None
    if args.device != "cpu":
        _, kernels, launches = common.count_gpu_kernels(llm.step)                      # the next one
    while not all(s.is_finished for s in seqs):
        llm.step()
    return ops, kernels, launches


def padding_demo(runner_cls) -> None:
    """Which captured graph each decode batch replays, and the padding rows replay writes, on
    stand-in graphs (a CPU has no CUDA graphs; the choice and the padding are plain tensor code)."""
    import numpy as np
    import torch

    from aios.engine.step_inputs import StepInputs

    class StandInGraph:
        def __init__(self) -> None:
            self.buffers = None

        def replay(self) -> None:
            self.buffers = {k: v.clone() for k, v in runner.graph_vars.items()}

    captured, width = [1, 2, 4, 8, 16, 32], 4
    runner = runner_cls(None, captured, width, torch.device("cpu"))
    runner.graph_vars = {k: torch.zeros(32, dtype=torch.int64) for k in ("input_ids", "positions", "slot_mapping")}
    runner.graph_vars["context_lens"] = torch.zeros(32, dtype=torch.int32)
    runner.graph_vars["block_tables"] = torch.zeros(32, width, dtype=torch.int32)
    for bs in captured:
        runner.graphs[bs] = StandInGraph()
        runner.graph_logits[bs] = torch.zeros(bs, 8)

    def step(n: int, prefill: bool = False, tables: int = 2) -> StepInputs:
        z = np.zeros(0, dtype=np.int64)
        return StepInputs(np.arange(n), np.arange(n), np.arange(n), np.zeros((n, tables), np.int32),
                          np.ones(n, np.int32), np.arange(n + 1, dtype=np.int32), np.arange(n), z, z, prefill, 1, 1)

    rows = []
    for label, inputs in [("decode, 1 sequence", step(1)), ("decode, 3 sequences", step(3)),
                          ("decode, 5 sequences", step(5)), ("decode, 32 sequences", step(32)),
                          ("decode, 33 sequences", step(33)), ("prefill, 5 sequences", step(5, prefill=True)),
                          (f"decode, 5 sequences, {width + 1}-block tables", step(5, tables=width + 1))]:
        bs = runner.batch_size_for(inputs)
        n = len(inputs.context_lens)
        rows.append([label, "eager" if bs is None else f"graph of {bs}", "-" if bs is None else bs - n])
    print(f"captured batch sizes: {captured}; block tables captured {width} blocks wide")
    print(common.table(["step", "runs as", "padding rows"], rows))
    t = {"input_ids": torch.arange(100, 105), "positions": torch.arange(40, 45), "slot_mapping": torch.arange(40, 45),
         "context_lens": torch.arange(41, 46, dtype=torch.int32),
         "block_tables": torch.arange(10, 20, dtype=torch.int32).view(5, 2)}
    runner.replay(t, 8)
    v = runner.graphs[8].buffers
    print("what the graph of 8 reads when it replays a batch of 5 (rows 5-7 are padding):")
    for k in ("slot_mapping", "context_lens"):
        print(f"  {k:<13} {v[k][:8].tolist()}")
    print(f"  block_tables  {v['block_tables'][:8].tolist()}")
    print("  (slot -1: the padding rows write no K/V; context length 0: they read none; -1 columns: no block)")


def use_runner(llm, runner_cls) -> None:
    """Replace the engine's CUDA-graph runner with one of runner_cls, captured on the same buffers'
    shapes (ModelRunner builds its own; there is no construction argument for it)."""
    runner = llm.model_runner
    if not runner.cuda_graphs.graphs:
        return
    mine = runner_cls(runner.model, runner.cuda_graphs.batch_sizes, runner.max_blocks_per_seq, runner.device)
    runner.cuda_graphs.close()
    mine.capture()
    runner.cuda_graphs = mine


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--mine", action="store_true",
                    help="use your CUDAGraphRunner (workspace/lesson11.py) in the padding demo and, on a GPU, "
                         "in the engine")
    args = common.setup(ap.parse_args())

    import torch

    from aios import LLM, SamplingParams
    from aios.bench.ladder import OVERRIDES
    from aios.engine.cuda_graph import CUDAGraphRunner

    runner_cls = CUDAGraphRunner
    if args.mine:
        from workspace.lesson11 import CUDAGraphRunner as runner_cls
        print("--mine: the padding demo" + (" and the lesson 11 engine's CUDA graphs" if args.device == "cuda" else "")
              + " run on YOUR CUDAGraphRunner (workspace/lesson11.py)")
    print(common.describe(args))
    if args.mine:                             # yours first: a stub fails here, before the long runs
        common.heading("which graph a decode step replays (YOUR batch_size_for and replay; stand-in graphs)")
        padding_demo(runner_cls)
    if args.quick:
        print("(--quick: a smoke test of every table; its runs are too short for their timings to mean anything, "
              "so compare rows only in a full run)")
    max_tokens = 16 if args.quick else 128
    batch_sizes = [1, 4] if args.quick else [1, 8, 32]
    rows, tokens, launch_counts = [], {}, {}
    for lesson in ("10", "11"):
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init, **OVERRIDES[lesson])
        if lesson == "11" and args.mine:
            use_runner(llm, runner_cls)
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
        launch_counts[lesson, "big"] = one_decode_step(llm, args, batch_sizes[-1])
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
    big, ops_big = batch_sizes[-1], launch_counts["10", "big"][0]
    if args.device == "cpu":
        print(f"the same at batch {big}: {ops_big:,} ops, {(ops_big - ops) / (big - 1):.0f} more per extra sequence: "
              f"the CPU's decode attention (decode_attention_ref) loops over the sequences; everything else is one op "
              f"per batch, whatever its size")
    else:
        print(f"the same at batch {big}: {ops_big:,} torch ops")
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
        print("(CPU: the model runs on the host itself, so there is no GPU time to hide the scheduling behind; "
              "a difference here is noise)")

    if not args.mine:
        common.heading("which graph a decode step replays (CUDAGraphRunner.batch_size_for, replay; stand-in graphs)")
        padding_demo(runner_cls)


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        raise SystemExit(f"{e}\nwrite it in workspace/lesson11.py; check it with: python lessons/check.py 11") from None
