"""What every lesson script shares, one module per concern:

    flags.py      the flags every lesson takes (--model, --device, --quick, --threads), setup, describe
    token_ids.py  the prompts, and TokenIds: a stand-in tokenizer for checkpoints that ship none
    report.py     timing (Timer, sync) and printing (table, heading)
    profilers.py  counting kernel launches (count_kernels, count_gpu_kernels)
    rungs.py      load_module (another lesson's file), compare_rungs (two ladder rungs side by side)

A script does `from lessons import common` and calls `common.parser(...)`, `common.Timer(...)`.
Nothing here imports torch or aios at import time, so every script's --help is instant.
"""

from lessons.common.flags import describe, parser, setup
from lessons.common.profilers import count_gpu_kernels, count_kernels
from lessons.common.report import Timer, heading, sync, table
from lessons.common.rungs import compare_rungs, load_module
from lessons.common.token_ids import PROMPTS, TokenIds, completion, has_tokenizer, prompt, prompts, tokenize, tokenizer

__all__ = ["PROMPTS", "Timer", "TokenIds", "compare_rungs", "completion", "count_gpu_kernels", "count_kernels",
           "describe", "has_tokenizer", "heading", "load_module", "parser", "prompt", "prompts", "setup", "sync",
           "table", "tokenize", "tokenizer"]
