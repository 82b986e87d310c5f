"""What every lesson script shares: the repo on sys.path, the common flags, timing, and tables.

A lesson script starts with

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # lessons/, for this file
    import common                                                    # puts the repo root on sys.path

so `python lessons/NN_slug/run_lessonNN.py` works from anywhere without installing aios.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
import time
import zlib
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Prompts in the style the bundled model (aios-tiny-bible, trained on the KJV) knows.
PROMPTS = [
    "And the king said",
    "In the beginning",
    "And it came to pass, when",
    "The LORD is my shepherd",
    "Then Jesus answered and said unto them",
    "And the people of Israel",
    "Blessed are the meek",
    "Now the serpent was",
    "And Moses went up",
    "Wisdom is the principal thing",
    "And David said to Saul",
    "Thus saith the LORD",
    "And the angel of the LORD",
    "Hear, O Israel",
    "And they came unto Jericho",
    "For God so loved the world",
]


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every lesson takes: --model, --device, --quick, --threads."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="a HuggingFace Qwen3 checkpoint directory (default: the bundled aios-tiny-bible)")
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


# ---- a model directory without a tokenizer -------------------------------------------------------

def has_tokenizer(model_dir: str) -> bool:
    """Whether the checkpoint ships tokenizer files (a random-weight checkpoint of a real shape, as
    scripts/run_lessons.py writes, has only config.json and weights)."""
    return any(os.path.isfile(os.path.join(model_dir, name))
               for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


class TokenIds:
    """Stands in for the tokenizer of a model directory that has none. encode gives each word of a
    text one fixed token id (a hash of the word, never a special token), so every run feeds the
    model the same prompts, of about the lengths the bundled tokenizer gives; decode shows ids as
    <id>, a run of one id as <id>xN. The ids mean nothing: this is only enough to drive a
    random-weight model."""

    def __init__(self, model_dir: str) -> None:
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        self.vocab_size = config["vocab_size"]
        self.special = set()
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            ids = config.get(key)
            self.special |= {ids} if isinstance(ids, int) else set(ids or [])

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        for word in text.split():
            i = zlib.crc32(word.encode()) % self.vocab_size
            while i in self.special:
                i = (i + 1) % self.vocab_size
            ids.append(i)
        return ids

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [f"<{int(i)}>" for i in ids]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        runs: list[list] = []                                   # [id, count]
        for i in map(int, ids):
            if runs and runs[-1][0] == i:
                runs[-1][1] += 1
            else:
                runs.append([i, 1])
        return "".join(f"<{i}>" + (f"x{n}" if n > 1 else "") for i, n in runs)

    def __len__(self) -> int:
        return self.vocab_size


@functools.cache
def _token_ids(model_dir: str) -> TokenIds:
    return TokenIds(model_dir)


def tokenizer(args: argparse.Namespace):
    """The checkpoint's tokenizer (transformers.AutoTokenizer), or TokenIds if it has none."""
    if args.skip_tokenizer_init:
        return _token_ids(args.model)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(args.model)


def prompt(args: argparse.Namespace, text: str) -> str | list[int]:
    """A prompt for aios.LLM: the text itself, or its TokenIds ids when the model has no tokenizer
    (the engine then runs with skip_tokenizer_init=True and takes token ids only)."""
    return _token_ids(args.model).encode(text) if args.skip_tokenizer_init else text


def prompts(args: argparse.Namespace, n: int) -> list:
    """n prompts: PROMPTS, repeated as needed (see prompt())."""
    return [prompt(args, PROMPTS[i % len(PROMPTS)]) for i in range(n)]


def tokenize(llm, text: str) -> list[int]:
    """llm.tokenize(text), or TokenIds' ids when the engine runs without a tokenizer."""
    return _token_ids(llm.config.model).encode(text) if llm.tokenizer is None else llm.tokenize(text)


def completion(args: argparse.Namespace, prompt: str | list[int], output: dict) -> str:
    """A prompt followed by what the engine generated for it (token ids without a tokenizer)."""
    if isinstance(prompt, str):
        return prompt + output["text"]
    tok = _token_ids(args.model)
    return f"{tok.decode(prompt)} -> {tok.decode(output['token_ids'])}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


class Timer:
    """`with Timer(device) as t: ...` then t.seconds (synchronizes the GPU at both ends)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table, numbers right-aligned."""
    def fmt(x) -> str:
        if isinstance(x, float):
            return f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.3f}"
        if isinstance(x, int) and not isinstance(x, bool):
            return f"{x:,}"
        return str(x)

    cells = [[fmt(x) for x in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(items: list[str], raw: list | None = None) -> str:
        out = []
        for i, (s, w) in enumerate(zip(items, widths)):
            numeric = raw is not None and isinstance(raw[i], (int, float)) and not isinstance(raw[i], bool)
            out.append(s.rjust(w) if numeric else s.ljust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(c, r) for c, r in zip(cells, rows)])


def load_module(relpath: str) -> ModuleType:
    """Import a file of another lesson, e.g. load_module("03_own_the_model/no_cache_loop.py")."""
    path = REPO / "lessons" / relpath
    name = "lesson_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def heading(text: str) -> None:
    print(f"\n== {text} ==")


def count_kernels(fn, *args, **kwargs):
    """(fn's result, number of torch ops that launch a kernel). Views and empty allocations are
    free; every other aten op is one kernel launch on a GPU (what CUDA graphs and fused kernels
    save). A Triton kernel bypasses torch's dispatcher: count it yourself."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and not func.overloadpacket.__name__.startswith("empty"):
                self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with _Count() as counter:
        result = fn(*args, **kwargs)
    return result, sum(counter.ops.values())


def count_gpu_kernels(fn, *args, **kwargs):
    """(fn's result, kernels the GPU ran, kernel and graph launches the host made) for one call on a
    CUDA device, from torch's profiler (CUPTI). Unlike count_kernels it sees Triton kernels and the
    kernels inside a replayed CUDA graph; a graph replay is one host launch however many it holds."""
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # "Profiler clears events at the end of each cycle"
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            result = fn(*args, **kwargs)
            torch.cuda.synchronize()
    kernels = launches = 0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels += not event.name.startswith(("Memcpy", "Memset"))
        elif "LaunchKernel" in event.name or "GraphLaunch" in event.name:   # runtime and driver API calls
            launches += 1
    return result, kernels, launches


def compare_rungs(args: argparse.Namespace, lessons: tuple[str, str], label) -> None:
    """Run the same greedy prompts under two ladder rungs and print time, tok/s and whether the
    tokens agree. `label(llm, lesson)` names a row (the switch that differs)."""
    from aios import LLM, SamplingParams
    from benchmarks.ladder import OVERRIDES

    n_prompts, max_tokens = (2, 8) if args.quick else (16, 64)
    texts = prompts(args, n_prompts)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    results = []
    for lesson in lessons:
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init, **OVERRIDES[lesson])
        llm.generate(texts[:1], SamplingParams(max_tokens=2), use_tqdm=False)        # warm-up
        with Timer(args.device) as t:
            outs = llm.generate(texts, params, use_tqdm=False)
        results.append((label(llm, lesson), [o["token_ids"] for o in outs], t.seconds))
        llm.close()
    total = n_prompts * max_tokens
    print(table(["engine", "seconds", "tok/s", "same tokens"], [
        [name, s, total / s, "-" if i == 0 else ("yes" if toks == results[0][1] else "NO")]
        for i, (name, toks, s) in enumerate(results)]))
