"""AIOS: an LLM inference engine built lesson by lesson. See README.md and lessons/."""

import logging as _logging

from aios.config import Config
from aios.llm import LLM
from aios.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "Config"]
__version__ = "0.1.0"

# The engine's start-up line (what it picked for this device) and its warnings go to stderr, unless
# the application has configured logging itself (then the "aios" logger propagates to it).
_logger = _logging.getLogger("aios")
if not _logger.handlers and not _logging.getLogger().handlers:
    _handler = _logging.StreamHandler()
    _handler.setFormatter(_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(_logging.INFO)
