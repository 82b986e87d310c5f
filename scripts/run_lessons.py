#!/usr/bin/env python
"""Run every lesson script on one device, each output to its own file, with a summary.

    python scripts/run_lessons.py --out lesson_outputs                      # GPU: Qwen3-0.6B shape
    python scripts/run_lessons.py --shape tiny --device cpu --out /tmp/lo   # a CPU smoke run in minutes

Steps:
  1. the checkpoint: --model DIR runs the lessons on that checkpoint; otherwise a random-weight
     checkpoint of --shape (default qwen3-0.6b: Qwen3-0.6B's exact config.json, aios/bench/shapes.py)
     is written to --ckpt-dir/<shape>-random (config.json + model.safetensors, no tokenizer), or
     reused if it is already there with the same shape, seed and init. The lessons run a model
     directory without a tokenizer on token-id prompts and print token ids for text
     (lessons/common/token_ids.py: TokenIds).
  2. each lessons/NN_*/run_lessonNN.py runs in its own process with --model and --device and the
     sizes in LESSON_ARGS (chosen so each GPU lesson takes seconds to about a minute on an H100),
     under a per-script --timeout (and what is left of --budget); a failing or hanging lesson does
     not stop the others.
  3. <out>/lessonNN.txt holds the command line (`$ python lessons/...`), then the script's stdout and
     stderr; <out>/summary.txt and summary.json give each lesson's status, exit code and wall time,
     and any printed line with a NO (a "same tokens" check that failed). The summary is rewritten
     after every lesson, so a run cut short still leaves one.

Lesson 15 (the HTTP server) needs fastapi and uvicorn: it is skipped with a note unless both
import (without a tokenizer it streams and compares token ids: the server's `return_token_ids`).
Lesson 14 (tensor parallelism) prints its own SKIPPED line when it sees fewer GPUs than --tp (2).

The random weights are not the dummy weights of benchmark.py (aios.utils.loader.init_dummy_weights:
uniform +-0.02, near-flat logits whose greedy choice bf16 rounding flips between two equivalent
engine settings). Here the residual stream keeps the current token's embedding as a strong
direction (--init stable, see write_checkpoint), so the greedy next token is the current token
(the model repeats the last prompt token) with a margin of 4-6 logits over the runner-up, and
every "same tokens" check of a lesson is robust to bf16 rounding (on the qwen3-0.6b shape, bf16
and fp32 agree on every token), while temperature-1 sampling still spreads over the vocabulary.
Speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))        # aios, when run from a checkout without `pip install -e .`

# Sizes per lesson (flags each script already has). Defaults everywhere else. On an H100 the engine
# rungs with torch reference attention (lessons 06-08) spend ~75 ms per decode step at batch 1 and
# ~170 ms at batch 16 (benchmarks/results/*-qwen3-0.6b-ladder.json), and the teaching loops of
# lessons 03-05 ~15 ms per token (estimates): these keep each lesson to about a minute or less.
LESSON_ARGS: dict[str, list[str]] = {
    "05": ["--lengths", "128", "512"],
    "06": ["--num-prompts", "4"],
    "07": ["--num-prompts", "8", "--max-tokens", "16"],
    "08": ["--num-prompts", "8"],
}

# A small shape for a smoke run of this driver on a CPU (same config keys as aios/bench/shapes.py).
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, vocab_size=2048, tie_word_embeddings=True, bos_token_id=2046,
            eos_token_id=2047)

INIT_VERSION = 1         # bump when init_tensor changes: a reused checkpoint must match
RESIDUAL = 3.0           # init="stable": the layers' outputs summed over depth, relative to the embedding


def shape_config(shape: str) -> dict:
    """config.json of a named shape: aios/bench/shapes.py's, or `tiny` (its config with TINY's sizes)."""
    from aios.bench.shapes import shape_config as named_shape_config

    try:
        c = named_shape_config("qwen3-0.6b", **TINY) if shape == "tiny" else named_shape_config(shape)
    except ValueError as e:
        raise SystemExit(f"error: {e} (or tiny)") from None
    if c["model_type"] != "qwen3":     # write_checkpoint writes Qwen3's tensors (tensor_shapes)
        raise SystemExit(f"error: --shape {shape} is a {c['model_type']} model; this script writes random Qwen3 "
                         f"checkpoints only: give another family as --model DIR (a real checkpoint)")
    return c


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """The HF Qwen3ForCausalLM checkpoint tensors of a config (tied embeddings: no lm_head.weight)."""
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    out = {"model.embed_tokens.weight": (c["vocab_size"], h)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (nh * d, h),
            p + "self_attn.k_proj.weight": (nkv * d, h),
            p + "self_attn.v_proj.weight": (nkv * d, h),
            p + "self_attn.o_proj.weight": (h, nh * d),
            p + "self_attn.q_norm.weight": (d,),
            p + "self_attn.k_norm.weight": (d,),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    out["model.norm.weight"] = (h,)
    if not c["tie_word_embeddings"]:
        out["lm_head.weight"] = (c["vocab_size"], h)
    return out


def init_tensor(name: str, shape: tuple[int, ...], c: dict, init: str, gen):
    """One random tensor (float32).

    init="dummy": what benchmark.py's engines run (aios.utils.loader.init_dummy_weights): every
    matrix uniform in [-0.02, 0.02], every norm weight 1.
    init="stable": unit-scale activations, and the current token's embedding kept as a strong
      direction of the residual stream (the layers add random directions of ~3x its size):
      embedding (and an untied LM head) N(0, 1); q/k/v/gate/up N(0, 1/fan_in); o_proj and down_proj
      N(0, RESIDUAL^2 / (layers * fan_in)): all layers together add ~RESIDUAL x the embedding;
      norm weights 1, except the final norm, 1/sqrt(hidden): the logits of the other tokens then
      spread with a standard deviation of ~1, and the current token's own logit stands 4-6 above
      the largest of them (the tied LM head scores the embedding against itself; measured on the
      qwen3-0.6b shape: 10-11 against 4.3-4.6 after a prompt, so p = 0.07-0.22 at temperature 1).
    """
    import torch

    if init == "dummy":
        if name.endswith("norm.weight"):
            return torch.ones(shape)
        return torch.empty(shape).uniform_(-0.02, 0.02, generator=gen)
    if name == "model.norm.weight":
        return torch.full(shape, c["hidden_size"] ** -0.5)
    if name.endswith("norm.weight"):
        return torch.ones(shape)
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return torch.randn(shape, generator=gen)
    std = shape[1] ** -0.5
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        std *= RESIDUAL / c["num_hidden_layers"] ** 0.5
    return torch.randn(shape, generator=gen) * std


def write_checkpoint(path: str, shape: str, seed: int = 0, init: str = "stable") -> str:
    """Write config.json, generation_config.json and model.safetensors (bf16) of a random Qwen3;
    reuse the directory when its marker file says it holds the same shape, seed and init."""
    import torch
    from safetensors.torch import save_file

    c = shape_config(shape)
    marker = {"shape": shape, "seed": seed, "init": init, "version": INIT_VERSION}
    marker_path = os.path.join(path, "random_checkpoint.json")
    if os.path.isfile(marker_path) and os.path.isfile(os.path.join(path, "model.safetensors")):
        with open(marker_path) as f:
            if json.load(f) == marker:
                print(f"reusing {path} ({shape}, random weights, seed {seed}, init {init})", flush=True)
                return path
    os.makedirs(path, exist_ok=True)
    for stale in ("random_checkpoint.json", "model.safetensors"):
        if os.path.exists(os.path.join(path, stale)):
            os.remove(os.path.join(path, stale))
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: init_tensor(name, s, c, init, gen).to(torch.bfloat16)
               for name, s in tensor_shapes(c).items()}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": sorted({c["eos_token_id"], c["bos_token_id"]})}, f)
    with open(marker_path, "w") as f:
        json.dump(marker, f)
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {path}: {shape}, {n:,} random parameters (seed {seed}, init {init}), "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return path


# ---- running the lessons ----------------------------------------------------------------------------

def lesson_scripts() -> list[tuple[str, Path]]:
    out = []
    for d in sorted((REPO / "lessons").iterdir()):
        if d.is_dir() and re.match(r"\d\d_", d.name):
            out.append((d.name[:2], d / f"run_lesson{d.name[:2]}.py"))
    return out


def shown_path(path: str | Path) -> str:
    """A path relative to the repo root when it is inside it (for the command line in the outputs)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def has_server_packages() -> bool:
    return subprocess.run([sys.executable, "-c", "import fastapi, uvicorn"], capture_output=True).returncode == 0


def run_one(number: str, script: Path, model: str, args: argparse.Namespace, out: Path, timeout: float) -> dict:
    """Run one lesson script, its stdout and stderr to out/lessonNN.txt; never raise."""
    extra = ["--quick"] if args.quick else LESSON_ARGS.get(number, [])
    cmd = [sys.executable, str(script), "--model", model, "--device", args.device, *extra]
    shown = " ".join(["python", shown_path(script), "--model", shown_path(model), "--device", args.device, *extra])
    path = out / f"lesson{number}.txt"
    row = {"lesson": number, "command": shown, "output": str(path)}
    if number == "15" and not has_server_packages():
        note = ("SKIPPED by scripts/run_lessons.py: lesson 15 needs fastapi and uvicorn, which do not import "
                "in this Python (pip install -r lessons/15_server/requirements.txt)\n")
        path.write_text(f"$ {shown}\n{note}")
        return {**row, "status": "skipped", "exit_code": None, "seconds": 0.0, "note": note.strip()}
    # the checkout's root on the path: the lessons import `lessons` and `aios` without an install
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
    start = time.perf_counter()
    with open(path, "w") as f:
        f.write(f"$ {shown}\n")
        f.flush()
        # its own session: on a timeout the whole process group goes (lesson 14 spawns workers)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = proc.returncode
    seconds = time.perf_counter() - start
    text = path.read_text(errors="replace")
    if timed_out:
        status = f"timeout ({timeout:.0f} s)"
        with open(path, "a") as f:
            f.write(f"\n[scripts/run_lessons.py: killed after {timeout:.0f} s]\n")
    elif rc != 0:
        status = f"failed (exit {rc})"
    elif re.search(r"^SKIPPED", text, re.M):
        status = "skipped"
    else:
        status = "ok"
    checks = [line for line in text.splitlines() if re.search(r"\bNO\b", line)]
    return {**row, "status": status, "exit_code": rc, "seconds": round(seconds, 1),
            "same_tokens_NO": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="lesson_outputs", help="folder for lessonNN.txt and summary.txt "
                    "(default: lesson_outputs)")
    ap.add_argument("--model", default=None, help="run on this checkpoint directory instead of a random one")
    ap.add_argument("--shape", default="qwen3-0.6b",
                    help="random checkpoint's shape: tiny, or a Qwen3 one of aios/bench/shapes.py "
                         "(default qwen3-0.6b)")
    ap.add_argument("--ckpt-dir", default=str(REPO / "benchmarks" / "checkpoints"),
                    help="where the random checkpoint is written or reused: <ckpt-dir>/<shape>-random "
                         "(default benchmarks/checkpoints, git-ignored)")
    ap.add_argument("--seed", type=int, default=0, help="random weights' seed (default 0)")
    ap.add_argument("--init", choices=["stable", "dummy"], default="stable",
                    help="random weights' distribution (default stable; see write_checkpoint)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="default cuda")
    ap.add_argument("--timeout", type=int, default=150, help="seconds per lesson script (default 150)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run, checkpoint included: a lesson gets at most what is left, "
                         "and lessons that would start with less than 20 s left are not run (default: no limit)")
    ap.add_argument("--only", default=None, help="comma-separated lesson numbers, e.g. 00,05,11 (default: all)")
    ap.add_argument("--quick", action="store_true", help="pass --quick to every lesson (instead of LESSON_ARGS)")
    ap.add_argument("--build-only", action="store_true", help="write (or check) the checkpoint, run nothing")
    args = ap.parse_args()

    start = time.perf_counter()
    if args.model is not None:
        if not os.path.isdir(args.model):
            raise SystemExit(f"error: --model {args.model!r} is not a directory")
        model = args.model
    else:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        model = write_checkpoint(os.path.join(args.ckpt_dir, f"{args.shape}-random"), args.shape, args.seed,
                                 args.init)
    build_s = time.perf_counter() - start
    if args.build_only:
        return
    model = str(Path(model).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = None if args.only is None else {f"{int(x):02d}" for x in args.only.split(",") if x.strip()}
    rows: list[dict] = []
    print(f"{'lesson':<7} {'status':<20} {'seconds':>8}  output", flush=True)
    for number, script in lesson_scripts():
        if only is not None and number not in only:
            continue
        left = None if args.budget is None else args.budget - (time.perf_counter() - start)
        timeout = float(args.timeout) if left is None else min(float(args.timeout), left)
        if left is not None and left < 20:
            row = {"lesson": number, "command": "-", "output": "-", "status": "not run (budget)", "exit_code": None,
                   "seconds": 0.0}
        else:
            row = run_one(number, script, model, args, out, timeout)
        rows.append(row)
        flag = f"  ({len(row['same_tokens_NO'])} line(s) with NO)" if row.get("same_tokens_NO") else ""
        print(f"{number:<7} {row['status']:<20} {row['seconds']:>8.1f}  {row['output']}{flag}", flush=True)
        write_summary(out, model, args.device, build_s, time.perf_counter() - start, rows)   # after each lesson

    total = time.perf_counter() - start
    print(f"\ntotal {total:.1f} s (checkpoint {build_s:.1f} s); {out / 'summary.txt'}", flush=True)
    sys.exit(0 if all(r["status"] in ("ok", "skipped") for r in rows) else 1)


def write_summary(out: Path, model: str, device: str, build_s: float, total: float, rows: list[dict]) -> None:
    lines = [f"model: {shown_path(model)}   device: {device}   checkpoint {build_s:.1f} s, total {total:.1f} s",
             "", f"{'lesson':<7} {'status':<20} {'exit':>5} {'seconds':>8}  command"]
    for r in rows:
        rc = "-" if r["exit_code"] is None else str(r["exit_code"])
        lines.append(f"{r['lesson']:<7} {r['status']:<20} {rc:>5} {r['seconds']:>8.1f}  {r['command']}")
        for line in r.get("same_tokens_NO", []):
            lines.append(f"{'':<7} a check says NO: {line.strip()}")
        if r.get("note"):
            lines.append(f"{'':<7} {r['note']}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"model": model, "device": device, "checkpoint_s": build_s,
                                                  "total_s": total, "lessons": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
