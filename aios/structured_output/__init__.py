"""Structured output (lesson 17): every sampled token keeps the output a prefix of a string the
request's constraint accepts (a JSON schema, any JSON object, a regex, a choice, an EBNF or Lark
grammar), through xgrammar.

    compiler.py   constraint -> compiled grammar over the model's tokens, cached by the spec
    manager.py    per-sequence grammar state; one step's bitmask, filled on the host, applied on
                  the device (aios/kernels/token_bitmask.py) to the logits before the sampler

Why xgrammar, and what a step costs: lessons/17_constrained_decoding/README.md and
benchmarks/structured_output_backends.py. How a step with a constrained row runs under async
scheduling: StructuredOutputRequests.launch (aios/engine/structured_output_requests.py).
"""

from aios.structured_output.compiler import Grammar, GrammarCompiler, spec_key
from aios.structured_output.manager import StructuredOutputGrammar, StructuredOutputManager

__all__ = ["Grammar", "GrammarCompiler", "StructuredOutputGrammar", "StructuredOutputManager", "spec_key"]
