"""The course stays true to the engine (lessons/).

- Every lesson's run script runs with --quick on a CPU, prints both sides of its comparison with
  numbers, and none of its "same tokens" checks says NO.
- Every lesson's engine setting (aios/bench/ladder.py) gives the same greedy tokens: optimizations
  change speed, never results.
- Every file, aios name, Config field and code excerpt a lesson README quotes exists, verbatim.
"""

from __future__ import annotations

import ast
import builtins
import gc
import importlib
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from aios import LLM, SamplingParams
from aios.bench.ladder import LADDER

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (REPO / "lessons").iterdir() if p.is_dir() and re.match(r"\d\d_", p.name))
# A script run by these tests imports this checkout's aios and lessons packages, installed or not (as
# pytest's `pythonpath` does for the tests themselves): what `pip install -e .` gives a learner.
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

# Per lesson: labels that must each be followed by a number on a printed row (both sides of the comparison).
EXPECTED_ROWS = {
    "00": ["one at a time", "batched"],
    "01": ["embedding", "total"],
    "02": ["HF transformers generate", "aios LLM.generate"],
    "03": ["HF transformers (KV cache)", "our modules, no cache"],
    "04": ["no cache (lesson 03)", "KV cache (lesson 04)"],
    "05": ["growing, torch.cat (lesson 04)", "pre-allocated (lesson 05)"],
    "06": ["contiguous, ", "paged, 16-token blocks (lesson 06)"],
    "07": ["one at a time (lesson 06)", "static batch (lesson 07)"],
    "08": ["static batches (lesson 07)", "continuous batching (lesson 08)", "whole prompt in one step",
           "chunked prefill, ", "12 blocks of 16 tokens"],
    "09": ["whole matrix (torch reference)", "online softmax, tiled", "prefill_attention", "decode_attention",
           "attention_backend='torch' (lesson 08)", "attention_backend='triton' (lesson 09)"],
    "10": ["fused_kernels=False (lesson 09)", "fused_kernels=True (lesson 10)"],
    "11": ["enforce_eager=True (lesson 10)", "enforce_eager=False (lesson 11)", "async_scheduling=False",
           "async_scheduling=True"],
    "12": ["greedy (temperature=0)", "sampled (temperature=0.8, top_p=0.95)"],
    "13": ["enable_prefix_caching=False (lesson 11)", "enable_prefix_caching=True (lesson 13)"],
    "14": ["tensor_parallel_size=1", "tensor_parallel_size=2"],
    "15": ["offline LLM.generate (lesson 14)", "HTTP server, streamed (lesson 15)"],
    "16": ["reference (every expert, every token)", "fused (routed pairs, grouped GEMM)", "top-8 of 128 experts",
           "dense model of the same size", "load imbalance"],
    "17": ["with the mask", "without", "regex [a-z ]{48,}"],
}

README_SECTIONS = ["The problem", "The idea", "The code", "Run it", "What it printed", "Why the numbers",
                   "Try this", "Next"]


def lesson(number: str) -> Path:
    return next(p for p in LESSONS if p.name.startswith(number))


def test_there_are_eighteen_lessons_each_complete():
    assert [p.name[:2] for p in LESSONS] == [f"{i:02d}" for i in range(18)]
    for p in LESSONS:
        for name in ("README.md", f"run_lesson{p.name[:2]}.py", "requirements.txt"):
            assert (p / name).is_file(), f"{p.name} lacks {name}"
    index = (REPO / "lessons" / "README.md").read_text()
    for p in LESSONS:
        assert f"({p.name}/README.md)" in index, f"lessons/README.md does not link {p.name}"


# ---- the run scripts --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(EXPECTED_ROWS))
def test_lesson_script_runs_quick_and_prints_its_comparison(number):
    script = lesson(number) / f"run_lesson{number}.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--device", "cpu"], cwd=REPO / "lessons",
                          capture_output=True, text=True, timeout=300, env=CHECKOUT_ENV)
    out = proc.stdout
    assert proc.returncode == 0, f"{script.name} failed:\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    assert "SKIPPED" not in out, out
    for label in EXPECTED_ROWS[number]:
        after = [line.split(label, 1)[1] for line in out.splitlines() if label in line]
        assert any(re.search(r"\d", rest) for rest in after), \
            f"{script.name}: no row {label!r} with a number in:\n{out}"
    if number == "13":
        assert re.search(r"enable_prefix_caching=True.*\s[1-9]\d*%", out), f"no prefix-cache hits:\n{out}"
    bad = [line for line in out.splitlines() if re.search(r"\bNO\b", line)]
    assert not bad, f"{script.name}: a result changed:\n" + "\n".join(bad)


@pytest.mark.parametrize("number", sorted(EXPECTED_ROWS))
def test_lesson_script_help_names_the_flags_without_loading_aios(number):
    script = str(lesson(number) / f"run_lesson{number}.py")
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--help']\n"
            f"try:\n    runpy.run_path({script!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('MODULES', *sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=CHECKOUT_ENV)
    assert proc.returncode == 0, proc.stderr
    help_text, _, modules = proc.stdout.partition("MODULES")
    for flag in ("--model", "--device", "--quick"):
        assert flag in help_text
    assert "aios" not in modules.split(), "--help should not wait for torch/aios to load"


@pytest.mark.slow
def test_lessons_run_on_a_checkpoint_without_a_tokenizer(tmp_path):
    """scripts/run_lessons.py writes a random-weight checkpoint with no tokenizer (as for the GPU runs
    of the Qwen3-0.6B shape) and runs the lessons whose prompts or printed text go through
    lessons/common/token_ids.py's TokenIds stand-in (lesson 15's server streams token ids): each prints its
    comparison, and no check says NO."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "run_lessons.py"), "--shape", "tiny",
                           "--device", "cpu", "--quick", "--ckpt-dir", str(tmp_path), "--out", str(out),
                           "--only", "01,02,08,12,13,15"], capture_output=True, text=True, timeout=600,
                          env=CHECKOUT_ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())["lessons"]
    assert [r["lesson"] for r in rows] == ["01", "02", "08", "12", "13", "15"]
    for row in rows:
        text = Path(row["output"]).read_text()
        assert row["status"] == "ok" and not row["same_tokens_NO"], text
        assert "no tokenizer: token-id prompts" in text
        for label in EXPECTED_ROWS[row["lesson"]]:
            after = [line.split(label, 1)[1] for line in text.splitlines() if label in line]
            assert any(re.search(r"\d", rest) for rest in after), f"no row {label!r} with a number in:\n{text}"


@pytest.fixture(scope="module")
def tiny_llama31(tmp_path_factory) -> str:
    """A Llama 3.1 (llama3 RoPE scaling) with a real tokenizer: no q/k norms, unlike the bundled Qwen3."""
    from aios.utils.tiny_checkpoint import make_checkpoint
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-llama31")), family="llama", rope_theta=500000.0,
                           rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32})


@pytest.mark.slow
@pytest.mark.parametrize("number", ["01", "02", "03", "10"])
def test_lesson_script_runs_on_a_llama_checkpoint(number, tiny_llama31):
    """The lessons that build a model of their own or call HF's (lesson 03's teaching model, lesson
    02's AutoModelForCausalLM, lesson 01's counts, lesson 10's element-wise steps) take any dense family."""
    script = lesson(number) / f"run_lesson{number}.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--device", "cpu", "--model", tiny_llama31],
                          cwd=REPO / "lessons", capture_output=True, text=True, timeout=300, env=CHECKOUT_ENV)
    out = proc.stdout
    assert proc.returncode == 0, f"{script.name} failed:\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    for label in EXPECTED_ROWS[number]:
        assert any(label in line and re.search(r"\d", line.split(label, 1)[1]) for line in out.splitlines()), \
            f"{script.name}: no row {label!r} with a number in:\n{out}"
    bad = [line for line in out.splitlines() if re.search(r"\bNO\b", line)]
    assert not bad, f"{script.name} on a Llama: a result changed:\n" + "\n".join(bad)
    assert "q_norm" not in out, "a Llama has no q/k norm"


# ---- the ladder: same tokens under every lesson's settings ----------------------------------------

LADDER_PROMPTS = ["And the king said", "In the beginning", "Thus saith the LORD, " * 6]


def ladder_tokens(device: str, dtype: str, **engine) -> dict[str, list[list[int]]]:
    """Greedy tokens of LADDER_PROMPTS under each rung's overrides, twice per engine (the second
    time with whatever the first left cached)."""
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    out = {}
    for number, _, overrides in LADDER:
        with LLM(device=device, dtype=dtype, **{**engine, **overrides}) as llm:
            out[number] = [o["token_ids"] for o in llm.generate(LADDER_PROMPTS, params, use_tqdm=False)]
            out[number + " again"] = [o["token_ids"] for o in llm.generate(LADDER_PROMPTS, params, use_tqdm=False)]
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()                 # the next engine sizes its KV cache from free memory
    return out


@pytest.fixture
def one_thread():
    """A 7M-parameter model gains nothing from more CPU threads, and spinning threads on a busy CI
    machine slow it down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_every_lesson_setting_gives_the_same_greedy_tokens(one_thread):
    tokens = ladder_tokens("cpu", "float32")
    first = tokens[LADDER[0][0]]
    for rung, got in tokens.items():
        assert got == first, f"lesson {rung}'s settings changed the greedy tokens"


@pytest.mark.gpu
def test_every_lesson_setting_gives_the_same_greedy_tokens_on_the_gpu():
    # fp32: the kernels differ from the references in summation order only
    tokens = ladder_tokens("cuda", "float32", max_num_seqs=8, max_model_len=512, gpu_memory_utilization=0.5)
    first = tokens[LADDER[0][0]]
    for rung, got in tokens.items():
        assert got == first, f"lesson {rung}'s settings changed the greedy tokens on the GPU"


# ---- the READMEs quote only what exists -------------------------------------------------------------

CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"^(?:aios|lessons|benchmarks|tests|scripts)/[\w./-]*$|^[\w-]+\.(?:py|md|txt|json|safetensors)$")
# variables the READMEs use for instances of aios classes
VARIABLES = {
    "llm": "LLM", "engine": "LLMEngine", "seq": "Sequence", "config": "Config", "batch": "ScheduledBatch",
    "context": "Context", "block_manager": "BlockManager", "model_runner": "ModelRunner",
    "scheduler": "Scheduler", "params": "SamplingParams", "hf_config": "ModelConfig", "inputs": "StepInputs",
    "block": "Block", "model": "Qwen3ForCausalLM", "layer": "Qwen3DecoderLayer", "self_attn": "Qwen3Attention",
    "mlp": "Qwen3MLP", "attn": "Attention", "tp": "TPGroup", "cache": "StaticKVCache",
}
MODULES = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn, "np": np}
PACKAGES = ("aios", "transformers", "safetensors", "openai", "httpx", "uvicorn", "fastapi", "triton")


@cache
def symbols() -> tuple[dict[str, set[str]], set[str], set[str]]:
    """(class -> its attributes incl. inherited, top-level functions and classes, every identifier)
    of aios/ and the lessons' Python files."""
    classes: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    top: set[str] = set()
    words: set[str] = set()
    files = list((REPO / "aios").rglob("*.py")) + list((REPO / "lessons").rglob("*.py"))
    for f in files:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                words.add(node.id)
            elif isinstance(node, ast.Attribute):
                words.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                words.add(node.name)
            elif isinstance(node, ast.arg):
                words.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg:
                words.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                words.add(node.value)                                   # dict keys, stats names
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                top.add(node.name)
            if isinstance(node, ast.ClassDef):
                attrs = classes.setdefault(node.name, set())
                bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
                for item in ast.walk(node):
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        attrs.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        attrs.add(item.target.id)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Attribute):
                        attrs.add(item.target.attr)
                    elif isinstance(item, ast.Assign):
                        for t in item.targets:
                            for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                                if isinstance(el, ast.Name):
                                    attrs.add(el.id)
                                elif isinstance(el, ast.Attribute) and isinstance(el.value, ast.Name) \
                                        and el.value.id == "self":
                                    attrs.add(el.attr)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(t, ast.Name):
                        top.add(t.id)

    def inherited(name: str, seen: set[str]) -> set[str]:
        out = set(classes.get(name, set()))
        for b in bases.get(name, []):
            if b in classes and b not in seen:
                out |= inherited(b, seen | {b})
        return out

    return {c: inherited(c, {c}) for c in classes}, top, words


def config_fields() -> set[str]:
    from dataclasses import fields

    from aios import Config
    from aios.sampling_params import SamplingParams as SP
    return {f.name for f in fields(Config)} | {f.name for f in fields(SP)}


def check_name(token: str) -> str | None:
    """None if `token` (an inline code span of a README) names something that exists, else why not."""
    classes, top, words = symbols()
    name = token[:-2] if token.endswith("()") else token
    if m := re.fullmatch(r"(\w+)=\S+", name):          # a Config / SamplingParams switch, a keyword, an env var
        key = m.group(1)
        known = key in config_fields() or key in words or key.isupper()
        return None if known else f"{key!r} is not a Config/SamplingParams field nor a name in aios/ or lessons/"
    if name.split(".")[0] in PACKAGES and "." in name:               # a module path, imported for real
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return f"{'.'.join(parts[:i])} has no {attr!r}"
                obj = getattr(obj, attr)
            return None
        return "no such module"
    if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", name):
        return None                                                      # an expression, not a name
    parts = name.split(".")
    head = parts[0]
    if head in MODULES:
        obj = MODULES[head]
        for attr in parts[1:]:
            if not hasattr(obj, attr):
                return f"{head} has no {attr!r}"
            obj = getattr(obj, attr)
        return None
    cls = head if head in classes else VARIABLES.get(head)
    if cls is not None and len(parts) > 1:
        if parts[1] not in classes[cls] and not hasattr(torch.nn.Module, parts[1]):
            return f"{cls} has no attribute {parts[1]!r}"
        return None if all(p in words for p in parts[2:]) else f"no {'.'.join(parts[2:])!r} anywhere in aios"
    if len(parts) > 1:
        return f"unknown object {head!r} (add it to VARIABLES in this test if it is an aios instance)"
    if name in dir(builtins):
        return None
    looks_like_code = token.endswith("()") or "_" in name or (name[0].isupper() and any(c.islower() for c in name))
    if looks_like_code and name not in words and name not in top:
        return "no such name in aios/ or lessons/"
    return None


def check_excerpt(block: str, readme: Path) -> str | None:
    """A code block that starts with `# path/to/file.py` must be lines of that file, in order."""
    lines = block.splitlines()
    marker = re.fullmatch(r"#\s*((?:aios|lessons|benchmarks)/\S+\.py)(?:\s.*)?", lines[0].strip())
    if not marker:
        return None
    path = REPO / marker.group(1)
    if not path.is_file():
        return f"{marker.group(1)} does not exist"
    source = [line.strip() for line in path.read_text().splitlines()]
    at = 0
    for line in lines[1:]:
        s = line.strip()
        if not s or s in ("...", "# ..."):
            continue
        try:
            at = source.index(s, at) + 1
        except ValueError:
            return f"{marker.group(1)}: line not found (in this order): {s!r}"
    return None


def path_exists(token: str, here: Path) -> bool:
    """A repo path, a path next to the README, or a bare file name of a lesson or of aios; NN stands
    for any lesson number."""
    pattern = token.replace("NN", "[0-9][0-9]")
    if "/" in token:
        return bool(list(REPO.glob(pattern)) or list(here.glob(pattern)))
    return bool(list(REPO.glob(pattern)) or list((REPO / "lessons").glob(f"*/{pattern}"))
                or list((REPO / "aios").rglob(pattern)))


@pytest.mark.parametrize("readme", [p / "README.md" for p in LESSONS] + [REPO / "lessons" / "README.md"],
                         ids=lambda p: p.parent.name)
def test_readme_quotes_only_what_exists(readme):
    text = readme.read_text()
    errors = []
    for lang, block in CODE_BLOCK.findall(text):
        if (why := check_excerpt(block, readme)) is not None:
            errors.append(why)
        if lang in ("bash", "sh", "console"):
            for m in re.finditer(r"python (\S+\.py)((?: --?[\w-]+(?: [^\s-]\S*)?)*)", block):
                script = REPO / m.group(1)
                if not script.is_file():
                    errors.append(f"command runs {m.group(1)}, which does not exist")
                    continue
                code = script.read_text() + "".join(f.read_text() for f in (REPO / "lessons" / "common").glob("*.py"))
                for flag in re.findall(r"(--[\w-]+)", m.group(2)):
                    if f'"{flag}"' not in code and flag != "--help":
                        errors.append(f"{m.group(1)} has no flag {flag}")
    prose = CODE_BLOCK.sub("", text)
    for token in INLINE.findall(prose):
        token = token.strip()
        if PATH.match(token):
            if not path_exists(token, readme.parent):
                errors.append(f"path `{token}` does not exist")
        elif (why := check_name(token)) is not None:
            errors.append(f"`{token}`: {why}")
    for target in LINK.findall(text):
        if not re.match(r"https?://", target) and not (readme.parent / target).exists():
            errors.append(f"link ({target}) is broken")
    assert not errors, f"{readme.relative_to(REPO)}:\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("path", [p / "README.md" for p in LESSONS], ids=lambda p: p.parent.name)
def test_readme_follows_the_lesson_order(path):
    text = path.read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    at = -1
    for section in README_SECTIONS:
        found = [i for i, h in enumerate(headings) if h.startswith(section)]
        assert found and found[0] > at, f"{path.parent.name}: section '{section}' missing or out of order"
        at = found[0]
    if (REPO / "workspace" / f"lesson{path.parent.name[:2]}.py").exists():    # a lesson with an exercise
        assert any(h.startswith("Build it") for h in headings), f"{path.parent.name}: no 'Build it' section"
