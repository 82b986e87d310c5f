"""vLLM behind the benchmark's engine interface (aios/bench/engine_runner.py), random weights, its defaults.

`vllm.LLM(model=DIR, load_format="dummy", ...)` once, from a config.json directory (a tokenizer
only where the directory carries one: structured output needs it), and each workload is one
`LLM.generate` of all its requests as `TokensPrompt`s. The workload's settings map to vLLM's own
names: `SamplingParams(temperature, max_tokens, ignore_eos, logprobs=N,
structured_outputs=StructuredOutputsParams(json=schema))`, `detokenize=False` (AIOS returns no text
without a tokenizer either). `llm_kwargs` and `sampling_kwargs` build the arguments and nothing
else, so they are tested on the CPU with no vLLM installed (tests/test_bench_suite.py). vLLM's
offline `LLM` keeps no per-request timings by default (`disable_log_stats=True`), so its rows have no
TTFT and its long-prompt rows no prompt tok/s unless `vllm_log_stats` (`--vllm-log-stats`) turns
them on; the prompt-length curve measures prefill without them (max_tokens 1).
"""

from __future__ import annotations

import os

from aios.bench.workloads import Workload


def has_tokenizer(model_dir: str) -> bool:
    return os.path.exists(os.path.join(model_dir, "tokenizer.json"))


def llm_kwargs(model_dir: str, options: dict) -> dict:
    """vllm.LLM's arguments: random weights, the suite's max_model_len, and otherwise vLLM's defaults."""
    kw = dict(model=model_dir, load_format="dummy", skip_tokenizer_init=not has_tokenizer(model_dir),
              max_model_len=options.get("max_model_len", 4096),
              gpu_memory_utilization=options.get("gpu_memory_utilization", 0.9), seed=options.get("seed", 0))
    if options.get("enforce_eager"):
        kw["enforce_eager"] = True
    if options.get("vllm_log_stats"):           # per-request TTFT (RequestOutput.metrics), off by default
        kw["disable_log_stats"] = False
    return kw


def sampling_kwargs(wl: Workload, max_tokens: int, structured_outputs_cls: type | None) -> dict:
    """vllm.SamplingParams' arguments for one request of wl."""
    kw = dict(temperature=wl.temperature, max_tokens=max_tokens, ignore_eos=wl.ignore_eos, detokenize=False)
    if wl.logprobs is not None:
        kw["logprobs"] = wl.logprobs
    if wl.json_schema is not None:
        if structured_outputs_cls is None:
            raise NotImplementedError("this vLLM has no vllm.sampling_params.StructuredOutputsParams")
        kw["structured_outputs"] = structured_outputs_cls(json=wl.json_schema)
    return kw


def _ttft(out) -> float | None:
    """TTFT from vLLM's per-request metrics, where this vLLM fills them (None otherwise)."""
    m = getattr(out, "metrics", None)
    if m is None:
        return None
    if getattr(m, "first_token_latency", None):
        return float(m.first_token_latency)
    first, arrival = getattr(m, "first_token_time", None), getattr(m, "arrival_time", None)
    return float(first - arrival) if first and arrival else None


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_dir: str, options: dict) -> None:
        import vllm
        self.vllm = vllm
        try:
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError:                     # an older vLLM: the json workloads are refused, the rest run
            StructuredOutputsParams = None
        self.structured_outputs_cls = StructuredOutputsParams
        self.kwargs = llm_kwargs(model_dir, options)
        self.note = None
        try:
            self.llm = vllm.LLM(**self.kwargs)
        except Exception as e:
            if self.kwargs["skip_tokenizer_init"]:
                raise
            # the bundled tokenizer is only for the structured-output rows: without it the others still run
            self.note = f"the tokenizer did not load ({type(e).__name__}: {str(e)[:300]}); ran without it"
            self.kwargs["skip_tokenizer_init"] = True
            self.llm = vllm.LLM(**self.kwargs)

    def info(self) -> dict:
        import torch
        info = {"version": self.vllm.__version__, "config": {k: v for k, v in self.kwargs.items() if k != "model"}}
        if self.note:
            info["note"] = self.note
        try:                                    # what vLLM picked (an internal path: absent in a fake)
            sched = self.llm.llm_engine.vllm_config.scheduler_config
            info.update(max_num_seqs=sched.max_num_seqs, max_num_batched_tokens=sched.max_num_batched_tokens)
        except AttributeError:
            pass
        if torch.cuda.is_available():
            info["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return info

    def generate(self, wl: Workload) -> tuple[list[int], list[float | None], dict]:
        from vllm.inputs import TokensPrompt
        params = [self.vllm.SamplingParams(**sampling_kwargs(wl, n, self.structured_outputs_cls))
                  for n in wl.max_tokens]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in wl.prompts], params, use_tqdm=False)
        return [len(o.outputs[0].token_ids) for o in outs], [_ttft(o) for o in outs], {}

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        del self.llm
