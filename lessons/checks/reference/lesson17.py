"""Reference for lesson 17: aios's token-bitmask reference (`apply_token_bitmask_ref`,
aios/kernels/token_bitmask.py, which the CPU path runs) and a choice's mask as the engine computes
it: the constraint compiled by aios.structured_output (xgrammar), advanced over the prefix."""

import numpy as np
import torch

from aios.kernels.token_bitmask import apply_token_bitmask_ref as apply_token_bitmask
from aios.sampling_params import StructuredOutputsParams
from aios.structured_output import GrammarCompiler, StructuredOutputGrammar


def choice_token_mask(tokenizer, choices: list[str], prefix_token_ids: list[int], vocab_size: int,
                      eos_token_id: int) -> torch.Tensor:
    compiler = GrammarCompiler(tokenizer, vocab_size, [eos_token_id], max_threads=1)
    grammar = StructuredOutputGrammar(compiler.compile(StructuredOutputsParams(choice=choices)))
    for t in prefix_token_ids:
        grammar.accept(t)
    bitmask = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)
    grammar.fill(bitmask, 0)
    bits = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[:vocab_size]
    return torch.from_numpy(bits.astype(bool))


__all__ = ["apply_token_bitmask", "choice_token_mask"]
