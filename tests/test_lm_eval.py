"""A real client no one here wrote: lm-evaluation-harness's `local-completions` model pointed at
`python -m aios.server` gives the same results as lm-eval's own `hf` model on the same checkpoint
(the bundled model, in float32), on two tasks defined in tests/lm_eval_tasks/ over local data:

- aios_tiny_choice (loglikelihood, multiple choice): every choice's summed logprob equal to 1e-3
  and the same is_greedy; so the same accuracy. This is completions `logprobs` + `echo`.
- aios_tiny_generate (generate_until, greedy, stop strings): the same text for every document.

The harness runs in a process of its own with the hub switched off (HF_HUB_OFFLINE,
HF_DATASETS_OFFLINE): the data set is a local JSON-lines file (`dataset_path: json`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")              # lm-eval's hf model needs it
pytest.importorskip("fastapi")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = os.path.join(REPO, "tests", "lm_eval_tasks")
BUNDLED = os.path.join(REPO, "aios", "assets", "aios-tiny-bible")
SERVED_NAME = "aios-tiny-bible"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """The bundled model without its generation_config's max_new_tokens: HF's generate would take
    it over the max_gen_toks lm-eval asks for."""
    path = str(tmp_path_factory.mktemp("lm-eval-model") / "aios-tiny-bible")
    shutil.copytree(BUNDLED, path)
    config_path = os.path.join(path, "generation_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.pop("max_new_tokens", None)
    with open(config_path, "w") as f:
        json.dump(config, f)
    return path


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm-eval-tasks")
    data = os.path.join(TASKS, "aios_tiny.jsonl")
    for name in ("aios_tiny_choice.yaml", "aios_tiny_generate.yaml"):
        with open(os.path.join(TASKS, name)) as f:
            (path / name).write_text(f.read().replace("DATA_FILE", data))
    return str(path)


@pytest.fixture(scope="module")
def server_url(checkpoint):
    """`python -m aios.server` on a free port (--port 0: it prints the URL it listens on)."""
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, "-m", "aios.server", "--model", checkpoint, "--port", "0",
                                "--device", "cpu", "--dtype", "float32", "--max-model-len", "512",
                                "--served-model-name", SERVED_NAME, "--log-level", "warning"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            match = re.search(r"at (http://\S+/v1)", line)
            if match:
                break
        else:
            pytest.fail("the server exited before it listened:\n" + "".join(lines))
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def run_lm_eval(task_dir: str, *models: tuple[str, str]) -> list[dict]:
    """lm-eval's results for each (model, model_args), in one process of its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, os.path.join(TASKS, "run_eval.py"), task_dir, *sum(models, ())],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert done.returncode == 0 and len(lines) == len(models), done.stdout[-3000:] + done.stderr[-5000:]
    return [json.loads(line.removeprefix("RESULTS ")) for line in lines]


@pytest.mark.slow
def test_lm_eval_through_the_server_equals_lm_eval_on_hf(checkpoint, task_dir, server_url):
    hf, served = run_lm_eval(task_dir, ("hf", f"pretrained={checkpoint},dtype=float32,device=cpu"), (
        "local-completions", f"model={SERVED_NAME},base_url={server_url}/completions,tokenizer_backend=huggingface,"
                             f"tokenizer={checkpoint},tokenized_requests=True,num_concurrent=1,max_retries=1"))
    hf_choice, served_choice = hf["samples"]["aios_tiny_choice"], served["samples"]["aios_tiny_choice"]
    assert len(hf_choice) == len(served_choice) == 8
    for want_doc, got_doc in zip(hf_choice, served_choice):
        for (want, want_greedy), (got, got_greedy) in zip(want_doc, got_doc):
            assert got == pytest.approx(want, abs=1e-3) and got_greedy == want_greedy
    assert served["samples"]["aios_tiny_generate"] == hf["samples"]["aios_tiny_generate"]
    for task in ("aios_tiny_choice", "aios_tiny_generate"):
        assert served["results"][task] == pytest.approx(hf["results"][task]), task
    # the bundled model knows its book: most answers are right (the task is not all noise)
    assert hf["results"]["aios_tiny_choice"]["acc,none"] >= 0.5
