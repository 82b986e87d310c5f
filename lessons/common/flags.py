"""The flags every lesson script takes, and what they resolve to (device, model directory, threads)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lessons.common.token_ids import has_tokenizer


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every lesson takes: --model, --device, --quick, --threads."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="a HuggingFace checkpoint directory of a family aios runs: Qwen3, Llama 3, Qwen2/2.5, "
                         "Mistral, Gemma 3 text, Qwen3-MoE (lessons 03-05's own model: the first four; "
                         "default: the bundled aios-tiny-bible)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--quick", action="store_true", help="a tiny run that finishes in seconds on a CPU (what CI runs)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: a tiny model's matmuls are too small to split, and "
                         "spinning threads on a busy machine slow it down many times)")
    return ap


def setup(args: argparse.Namespace) -> argparse.Namespace:
    """Resolve the device and the model directory; set the CPU thread count. Returns args."""
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA GPU")
    torch.set_num_threads(max(1, args.threads))
    if args.model is None:
        from aios.assets import default_model_path
        args.model = default_model_path()
    elif not os.path.isdir(args.model):
        sys.exit(f"error: --model {args.model!r} is not a directory")
    args.skip_tokenizer_init = not has_tokenizer(args.model)     # then prompts are token ids (TokenIds)
    return args


def describe(args: argparse.Namespace) -> str:
    """One line naming the model and the device, printed at the top of every run."""
    import platform

    import torch

    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})"
    line = f"model: {Path(args.model).name}   device: {dev}   torch {torch.__version__}"
    if getattr(args, "skip_tokenizer_init", False):
        line += "   (no tokenizer: token-id prompts, ids printed as <id>)"
    return line
