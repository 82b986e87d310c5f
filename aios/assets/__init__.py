"""The small model AIOS bundles, so `LLM()` and `python generate.py` run with nothing to download.

`aios-tiny-bible/` is a 7M-parameter Qwen3 in the HuggingFace layout (config.json, model.safetensors,
tokenizer.json, ...), trained from scratch by scripts/train_default_model.py on public-domain English.
It is a toy for demos and tests, not a Qwen3 release; its README.md is the model card.
"""

from __future__ import annotations

import os

DEFAULT_MODEL_NAME = "aios-tiny-bible"
DEFAULT_MODEL_DIR: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_MODEL_NAME)

# What a loader needs; the card, loss curve and word list are documentation.
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json")


def default_model_path() -> str:
    """Absolute path of the bundled model directory; raises FileNotFoundError if any file is missing."""
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, f))]
    if missing:
        raise FileNotFoundError(
            f"the bundled default model is incomplete: {', '.join(missing)} missing from {DEFAULT_MODEL_DIR}. "
            "Restore it from git (`git checkout -- aios/assets`), retrain it with "
            "`python scripts/train_default_model.py --out aios/assets/aios-tiny-bible`, "
            "or pass a model directory explicitly (e.g. --model /path/to/Qwen3-0.6B).")
    return DEFAULT_MODEL_DIR
