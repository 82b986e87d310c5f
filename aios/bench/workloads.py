"""Benchmark workloads: lists of (prompt token ids, max_tokens), seeded, identical for every engine."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]
    max_tokens: list[int]
    temperature: float = 0.6
    description: str = ""

    @property
    def num_prompt_tokens(self) -> int:
        return sum(map(len, self.prompts))

    @property
    def num_output_tokens(self) -> int:
        return sum(self.max_tokens)


def _ids(rng: random.Random, n: int, vocab: int = 10000) -> list[int]:
    return [rng.randint(0, vocab - 1) for _ in range(n)]


def standard(num_seqs: int = 256, lo: int = 100, hi: int = 1024, seed: int = 0, vocab: int = 10000) -> Workload:
    """The offline workload nano-vllm and its users report: input and output lengths U[lo, hi]."""
    rng = random.Random(seed)
    prompts = [_ids(rng, rng.randint(lo, hi), vocab) for _ in range(num_seqs)]
    max_tokens = [rng.randint(lo, hi) for _ in range(num_seqs)]
    return Workload("standard", prompts, max_tokens,
                    description=f"{num_seqs} seqs, input/output U[{lo},{hi}], seed {seed}, ignore_eos")


def many_short(num_seqs: int = 512, seed: int = 0, vocab: int = 10000) -> Workload:
    """Chat-like traffic: many short requests, input U[20, 400], output U[20, 600], temperature 0.6.
    What max_num_seqs decides: at 256 sequences a step the GPU runs out of work long before memory."""
    rng = random.Random(seed)
    prompts = [_ids(rng, rng.randint(20, 400), vocab) for _ in range(num_seqs)]
    max_tokens = [rng.randint(20, 600) for _ in range(num_seqs)]
    return Workload("short", prompts, max_tokens,
                    description=f"{num_seqs} seqs, input U[20,400], output U[20,600], seed {seed}, ignore_eos")


def fixed(num_seqs: int, input_len: int, output_len: int, seed: int = 0, vocab: int = 10000) -> Workload:
    rng = random.Random(seed)
    return Workload(f"batch{num_seqs}", [_ids(rng, input_len, vocab) for _ in range(num_seqs)], [output_len] * num_seqs,
                    temperature=0.0, description=f"{num_seqs} seqs, in {input_len} / out {output_len}, greedy")


def shared_prefix(num_seqs: int = 64, prefix_len: int = 2048, suffix_len: int = 64, output_len: int = 32,
                  seed: int = 0, vocab: int = 10000) -> Workload:
    """Many requests behind one long system prompt: what prefix caching is for."""
    rng = random.Random(seed)
    system = _ids(rng, prefix_len, vocab)
    return Workload("prefix", [system + _ids(rng, suffix_len, vocab) for _ in range(num_seqs)], [output_len] * num_seqs,
                    temperature=0.0,
                    description=f"{num_seqs} seqs sharing a {prefix_len}-token prefix + {suffix_len} own, "
                                f"out {output_len}")


def by_name(name: str, *, num_seqs: int, input_len: int, output_len: int, seed: int, vocab: int) -> Workload:
    """The workload a benchmark names (benchmark.py and every peer runner rebuild it the same way);
    num_seqs counts for standard and ladder, input_len / output_len for batchN."""
    if name == "standard":
        return standard(num_seqs=num_seqs, seed=seed, vocab=vocab)
    if name == "short":
        return many_short(seed=seed, vocab=vocab)
    if name.startswith("batch"):
        return fixed(int(name[5:]), input_len, output_len, seed=seed, vocab=vocab)
    if name == "ladder":
        return standard(num_seqs=num_seqs, lo=64, hi=256, seed=seed, vocab=vocab)
    if name == "prefix":
        return shared_prefix(seed=seed, vocab=vocab)
    raise ValueError(f"unknown workload {name!r}")
