"""Benchmark workloads: seeded lists of (prompt token ids, max_tokens) + sampling, identical for every engine.

Every engine runner (aios/bench/runners.py, peers/) rebuilds a workload from its name with `by_name`,
so the parent process sends names, never token ids. A workload says everything that decides what
an engine computes: the prompts, max_tokens, temperature, ignore_eos, and issue 20's request
features (logprobs, a JSON schema); and how the suite runs it: on a cold prefix cache (`cold`), or
on the cache the workload named in `after` leaves (long16k-warm after long16k).

    standard      256 seqs, input/output U[100, 1024], temperature 0.6 (what nano-vllm reports)
    short         512 seqs, input U[20, 400], output U[20, 600]
    batchN        N seqs, in 128 / out 512, greedy (batch1, batch32)
    prefix        64 requests behind one 2,048-token prefix (+64 own), out 32, cold cache
    long16k       16 prompts of 16,384 tokens, out 256, cold cache (prompt tok/s reported)
    long16k-warm  the same prompts again, the prefix cache warm from long16k
    json1/json64  structured output: a JSON schema, batch 1 / 64, out <= 256, stops at the schema's end
    logprobs      batch32 with logprobs=5
    concurrency-N N seqs, in 128 / out 256 (scaling_output_len), greedy (--scaling concurrency)
    prompt-len-L  max(1, 65,536 // L) prompts of L tokens, max_tokens 1, cold: prefill (prompt tok/s)
    prompt-len-L-decode  the same prompts, out 64, cache warm: decode at context L (--scaling prompt-len)
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

# The schema of the `json` workloads: bounded, so that random weights inside the grammar still stop.
JSON_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 32},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 8},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}

SUITE = ("standard", "batch1", "batch32", "short", "prefix", "long16k", "long16k-warm", "json1", "json64", "logprobs")


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]
    max_tokens: list[int]
    temperature: float = 0.6
    description: str = ""
    ignore_eos: bool = True
    logprobs: int | None = None               # vLLM's SamplingParams.logprobs: top-N per output token
    json_schema: dict | None = None           # vLLM's StructuredOutputsParams(json=...)
    cold: bool = True                         # the prefix cache is emptied before it runs
    after: str | None = None                  # runs on the prefix cache this workload leaves (untimed, if not just run)
    prompt_rate: bool = False                 # report prompt tok/s (prefill-bound rows)
    show_ttft: bool = False                   # TTFT means something here (not a queue of 256 arrivals)

    @property
    def num_prompt_tokens(self) -> int:
        return sum(map(len, self.prompts))

    @property
    def num_output_tokens(self) -> int:
        return sum(self.max_tokens)

    @property
    def max_seq_len(self) -> int:
        return max(len(p) + n for p, n in zip(self.prompts, self.max_tokens))

    @property
    def needs_tokenizer(self) -> bool:
        return self.json_schema is not None   # a grammar is over the tokens' bytes


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


def fixed(num_seqs: int, input_len: int, output_len: int, seed: int = 0, vocab: int = 10000,
          name: str | None = None) -> Workload:
    rng = random.Random(seed)
    return Workload(name or f"batch{num_seqs}", [_ids(rng, input_len, vocab) for _ in range(num_seqs)],
                    [output_len] * num_seqs, temperature=0.0, show_ttft=num_seqs == 1,
                    description=f"{num_seqs} seqs, in {input_len} / out {output_len}, greedy")


def shared_prefix(num_seqs: int = 64, prefix_len: int = 2048, suffix_len: int = 64, output_len: int = 32,
                  seed: int = 0, vocab: int = 10000) -> Workload:
    """Many requests behind one long system prompt: what prefix caching is for (first pass: cold)."""
    rng = random.Random(seed)
    system = _ids(rng, prefix_len, vocab)
    return Workload("prefix", [system + _ids(rng, suffix_len, vocab) for _ in range(num_seqs)], [output_len] * num_seqs,
                    temperature=0.0, show_ttft=True,
                    description=f"{num_seqs} seqs sharing a {prefix_len}-token prefix + {suffix_len} own, "
                                f"out {output_len}, prefix cache cold")


def long_prompts(num_seqs: int = 16, prompt_len: int = 16384, output_len: int = 256, warm: bool = False,
                 seed: int = 0, vocab: int = 10000) -> Workload:
    """Long prompts: prefill-bound. `warm`: the same prompts again after the cold pass left them cached."""
    rng = random.Random(seed)
    name = f"long{prompt_len // 1024}k" + ("-warm" if warm else "")
    return Workload(name, [_ids(rng, prompt_len, vocab) for _ in range(num_seqs)], [output_len] * num_seqs,
                    temperature=0.0, cold=not warm, after=f"long{prompt_len // 1024}k" if warm else None,
                    prompt_rate=True, show_ttft=True,
                    description=f"{num_seqs} prompts of {prompt_len} tokens, out {output_len}, greedy, "
                                + ("prefix cache warm (the same prompts just ran)" if warm else "prefix cache cold"))


def json_output(num_seqs: int, output_len: int = 256, seed: int = 0, vocab: int = 10000) -> Workload:
    """Structured output: every request constrained to JSON_SCHEMA; stops where the schema ends."""
    rng = random.Random(seed)
    return Workload(f"json{num_seqs}", [_ids(rng, 128, vocab) for _ in range(num_seqs)], [output_len] * num_seqs,
                    temperature=0.0, ignore_eos=False, json_schema=copy.deepcopy(JSON_SCHEMA), show_ttft=num_seqs == 1,
                    description=f"{num_seqs} seqs, in 128 / out <= {output_len}, greedy, a JSON schema "
                                "(structured_outputs json=), stops at EOS")


def with_logprobs(num_seqs: int = 32, input_len: int = 128, output_len: int = 512, seed: int = 0,
                  vocab: int = 10000) -> Workload:
    wl = fixed(num_seqs, input_len, output_len, seed=seed, vocab=vocab, name="logprobs")
    wl.logprobs = 5
    wl.description += ", logprobs=5"
    return wl


def prompt_len_point(prompt_len: int, decode: bool, total_tokens: int = 65536, output_len: int = 64,
                     seed: int = 0, vocab: int = 10000) -> Workload:
    """One point of the prompt-length curve: prefill of ~total_tokens in prompts of prompt_len (cold,
    max_tokens 1), or (decode) the same prompts generating output_len on the cache that pass left."""
    rng = random.Random(seed)
    n = max(1, total_tokens // prompt_len)
    base = f"prompt-len-{prompt_len}"
    return Workload(base + ("-decode" if decode else ""), [_ids(rng, prompt_len, vocab) for _ in range(n)],
                    [output_len if decode else 1] * n, temperature=0.0, cold=not decode,
                    after=base if decode else None, prompt_rate=not decode, show_ttft=not decode,
                    description=f"{n} prompts of {prompt_len} tokens, "
                                + (f"out {output_len}, prefix cache warm" if decode else "max_tokens 1, cold"))


# by_name's keywords
OPTIONS = ("num_seqs", "input_len", "output_len", "seed", "vocab", "scaling_output_len", "scaling_prompt_tokens")


def options_kwargs(options: dict) -> dict:
    """The by_name keywords among a runner's options."""
    return {k: options[k] for k in OPTIONS if options.get(k) is not None}


def by_name(name: str, *, num_seqs: int = 256, input_len: int = 128, output_len: int = 512, seed: int = 0,
            vocab: int = 10000, scaling_output_len: int = 256, scaling_prompt_tokens: int = 65536) -> Workload:
    """The workload a benchmark names (benchmark.py and every runner rebuild it the same way);
    num_seqs counts for standard and ladder, input_len / output_len for batchN and logprobs,
    scaling_output_len for concurrency-N, scaling_prompt_tokens (prompt tokens a point) for prompt-len-L."""
    kw = dict(seed=seed, vocab=vocab)
    if name == "standard":
        return standard(num_seqs=num_seqs, **kw)
    if name == "short":
        return many_short(**kw)
    if name.startswith("batch") and name[5:].isdigit():
        return fixed(int(name[5:]), input_len, output_len, **kw)
    if name == "ladder":
        return standard(num_seqs=num_seqs, lo=64, hi=256, **kw)
    if name == "prefix":
        return shared_prefix(**kw)
    if name in ("long16k", "long16k-warm"):
        return long_prompts(warm=name.endswith("-warm"), **kw)
    if name.startswith("json") and name[4:].isdigit():
        return json_output(int(name[4:]), **kw)
    if name == "logprobs":
        return with_logprobs(input_len=input_len, output_len=output_len, **kw)
    if name.startswith("concurrency-") and name[12:].isdigit():
        return fixed(int(name[12:]), 128, scaling_output_len, name=name, **kw)
    if name.startswith("prompt-len-"):
        rest = name[11:].removesuffix("-decode")
        if rest.isdigit():
            return prompt_len_point(int(rest), decode=name.endswith("-decode"), total_tokens=scaling_prompt_tokens,
                                    **kw)
    raise ValueError(f"unknown workload {name!r}; one of {', '.join(SUITE)}, batchN, jsonN, ladder, "
                     "concurrency-N, prompt-len-L[-decode]")
