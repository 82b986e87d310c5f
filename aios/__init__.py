"""AIOS: an LLM inference engine built lesson by lesson. See README.md and lessons/.

    from aios import LLM, SamplingParams, Config

The names load on first use (PEP 562), so `aios --help` and the lessons' `--help` do not
wait for torch to import.
"""

import logging as _logging

__all__ = ["LLM", "SamplingParams", "StructuredOutputsParams", "Config"]
__version__ = "0.1.0"

_LAZY = {"LLM": "aios.llm", "SamplingParams": "aios.sampling_params",
         "StructuredOutputsParams": "aios.sampling_params", "Config": "aios.config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aios' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


# The engine's start-up line (what it picked for this device) and its warnings go to stderr, unless
# the application has configured logging itself (then the "aios" logger propagates to it).
_logger = _logging.getLogger("aios")
if not _logger.handlers and not _logging.getLogger().handlers:
    _handler = _logging.StreamHandler()
    _handler.setFormatter(_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(_logging.INFO)
