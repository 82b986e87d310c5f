"""Run lm-evaluation-harness on the tasks of this folder and print each sample's responses as JSON.

    python tests/lm_eval_tasks/run_eval.py TASK_DIR MODEL MODEL_ARGS [MODEL MODEL_ARGS ...]

TASK_DIR holds the task YAMLs (tests/test_lm_eval.py writes them with the data file's path); MODEL is
lm-eval's model name ("hf", "local-completions"); one line "RESULTS {json}" per model, in order
(one process for all: the harness takes seconds to import). Run in a process of its own, with HF_HUB_OFFLINE /
HF_DATASETS_OFFLINE set: the harness must not reach for the hub.
"""

from __future__ import annotations

import json
import sys

TASKS = ["aios_tiny_choice", "aios_tiny_generate"]


def evaluate(task_dir: str, model: str, model_args: str) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS,
                                      task_manager=TaskManager(include_path=task_dir), log_samples=True,
                                      batch_size=1)
    out = {"results": results["results"],
           "samples": {task: [s["filtered_resps"] for s in sorted(samples, key=lambda s: s["doc_id"])]
                       for task, samples in results["samples"].items()}}
    print("RESULTS " + json.dumps(out))


if __name__ == "__main__":
    task_dir, *models = sys.argv[1:]
    for model, model_args in zip(models[::2], models[1::2]):
        evaluate(task_dir, model, model_args)
