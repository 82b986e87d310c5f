#!/usr/bin/env python
"""GPU memory an engine holds besides its KV cache: build LLM on random weights of a shape with a
fixed, small KV cache and no CUDA graphs, and print what torch has allocated.

    PYTHONPATH=. python benchmarks/model_memory.py --shape qwen3-0.6b [--tag NAME]

Run it from a clone's root (PYTHONPATH=. picks that clone's aios: point it at an older checkout's
root to measure that one). One line out: allocated and peak GiB, and the weights' own GiB.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen3-0.6b", help="a shape of aios.bench.shapes (default: %(default)s)")
    ap.add_argument("--tag", default="", help="a name printed with the line")
    args = ap.parse_args(argv)
    import torch

    try:
        from aios.bench.shapes import write_shape
    except ImportError:                        # checkouts before aios/bench existed
        from benchmarks.shapes import write_shape
    from aios import LLM

    model_dir = write_shape(args.shape, "benchmarks/checkpoints")
    llm = LLM(model_dir, load_format="dummy", skip_tokenizer_init=True, num_kvcache_blocks=64, enforce_eager=True,
              max_num_seqs=256, max_num_batched_tokens=8192)
    torch.cuda.synchronize()
    weights = sum(p.numel() * p.element_size() for p in llm.model_runner.model.parameters())
    print(f"MEM {args.tag} {args.shape}: allocated {torch.cuda.memory_allocated() / 2**30:.3f} GiB with 64 KV "
          f"blocks (peak {torch.cuda.max_memory_allocated() / 2**30:.3f} GiB), weights {weights / 2**30:.3f} GiB",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
