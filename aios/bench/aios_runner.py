"""AIOS behind the benchmark's engine interface (aios/bench/engine_runner.py): its public API only.

`LLM(model_dir, **engine_kwargs)` once; each workload is one `LLM.generate` of all its requests, with
SamplingParams carrying the workload's settings under vLLM's names (logprobs, structured_outputs),
so a field the engine does not apply yet is refused by `LLM.generate` and the runner skips the row.
"""

from __future__ import annotations

import torch

import aios
from aios.bench.workloads import Workload


def sampling_params(wl: Workload) -> list[aios.SamplingParams]:
    from aios.sampling_params import StructuredOutputsParams
    structured = StructuredOutputsParams(json=wl.json_schema) if wl.json_schema is not None else None
    return [aios.SamplingParams(temperature=wl.temperature, max_tokens=n, ignore_eos=wl.ignore_eos,
                                logprobs=wl.logprobs, structured_outputs=structured) for n in wl.max_tokens]


class AiosEngine:
    name = "aios"

    def __init__(self, model_dir: str, options: dict) -> None:
        self.llm = aios.LLM(model_dir, **options.get("engine_kwargs", {}))
        self.engine_kwargs = options.get("engine_kwargs", {})

    def info(self) -> dict:
        cfg = self.llm.config
        info = {"version": aios.__version__, "config": self.engine_kwargs, "max_model_len": cfg.max_model_len,
                "max_num_seqs": cfg.max_num_seqs, "max_num_batched_tokens": cfg.max_num_batched_tokens,
                "num_kvcache_blocks": self.llm.num_kvcache_blocks, "kvcache_block_size": cfg.kvcache_block_size}
        if cfg.device == "cuda":
            info["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return info

    def generate(self, wl: Workload) -> tuple[list[int], list[float | None], dict]:
        before = self.llm.stats()
        outs = self.llm.generate(wl.prompts, sampling_params(wl), use_tqdm=False)
        after = self.llm.stats()
        hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
        itl = [x for o in outs for x in o["metrics"]["itl_s"]]
        extras = {"num_preemptions": after["num_preemptions"] - before["num_preemptions"],
                  "prefix_cache_hit_tokens": hits, "prefill_tokens_computed": wl.num_prompt_tokens - hits}
        if itl:
            from aios.bench.engine_runner import percentiles_ms
            extras["itl_ms"] = percentiles_ms(itl)
        return [len(o["token_ids"]) for o in outs], [o["metrics"]["ttft_s"] for o in outs], extras

    def reset_prefix_cache(self) -> None:
        self.llm.block_manager.reset_prefix_cache()

    def close(self) -> None:
        self.llm.close()
