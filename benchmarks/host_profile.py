"""Where the host's time goes in a batch-1 decode step: cProfile over LLM.step, per step.

    PYTHONPATH=$PWD python benchmarks/host_profile.py --shape qwen3-0.6b          # GPU
    PYTHONPATH=$PWD python benchmarks/host_profile.py --model DIR --device cpu    # any checkpoint

With CUDA graphs a batch-1 decode step of a small model is ~0.85 ms of GPU work, and async
scheduling hides the host's work for step N+1 behind it only while that work is shorter: once the
host takes longer than the GPU, the host sets the pace. This runs one greedy request (in 128 /
out 512), first timed plainly (ms per step), then under cProfile (which slows Python, so its
per-function times are shares, not absolute costs), and prints the functions with the most time of
their own per step. Compare two commits by running it on each (PYTHONPATH picks the tree).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen3-0.6b", help="random weights of a published config (aios/bench/shapes.py)")
    ap.add_argument("--model", help="a checkpoint dir instead of --shape")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=400, help="decode steps timed (and then profiled)")
    ap.add_argument("--top", type=int, default=30, help="functions listed")
    ap.add_argument("--no-async-scheduling", action="store_true")
    args = ap.parse_args()

    import aios
    from aios import LLM, SamplingParams
    from aios.bench.shapes import write_shape

    model_dir = args.model or write_shape(args.shape, tempfile.mkdtemp())
    llm = LLM(model_dir, device=args.device, load_format="dummy", skip_tokenizer_init=True,
              async_scheduling=not args.no_async_scheduling)
    prompt = list(range(1, 129))
    llm.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
    llm.add_request(prompt, SamplingParams(max_tokens=2 * args.steps + 32, temperature=0.0, ignore_eos=True))
    for _ in range(16):                                         # the prefill and the first decodes
        llm.step()
    t = time.perf_counter()
    for _ in range(args.steps):
        llm.step()
    plain_ms = (time.perf_counter() - t) / args.steps * 1000
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    for _ in range(args.steps):
        llm.step()
    profiler.disable()
    profiled_ms = (time.perf_counter() - t) / args.steps * 1000
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"aios from {aios.__file__}")
    print(f"{args.steps} batch-1 decode steps: {plain_ms:.3f} ms a step ({1000 / plain_ms:.1f} tok/s); "
          f"under cProfile {profiled_ms:.3f} ms a step")
    print(out.getvalue())
    llm.close()


if __name__ == "__main__":
    main()
