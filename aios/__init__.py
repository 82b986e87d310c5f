"""AIOS: an LLM inference engine built lesson by lesson. See README.md and lessons/."""

from aios.config import Config
from aios.llm import LLM
from aios.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "Config"]
__version__ = "0.1.0"
