"""HuggingFace transformers behind the benchmark's engine interface: static batches, left padding, SDPA.

Any family transformers knows (`AutoModelForCausalLM`; random weights from config.json where the
directory has no safetensors), bf16 on the GPU and fp32 on the CPU. Requests are sorted by output
length into static batches (`hf_batch_size`): a batch runs until its longest request is done, so
grouping similar lengths wastes the fewest steps, and only requested tokens are counted. Each
request generates exactly max_tokens (min_new_tokens = max_new_tokens): workloads that stop at EOS
or ask for logprobs or a JSON schema are refused, not approximated. No prefix cache, no TTFT.
"""

from __future__ import annotations

import glob
import os

import torch

from aios.bench.workloads import Workload


class HFEngine:
    name = "hf"

    def __init__(self, model_dir: str, options: dict) -> None:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM
        self.version = transformers.__version__
        self.device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.batch_size = options.get("hf_batch_size", 64)
        if glob.glob(os.path.join(model_dir, "*.safetensors")):
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        else:
            config = AutoConfig.from_pretrained(model_dir)
            config._attn_implementation = "sdpa"
            with torch.device(self.device):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        self.model = model.to(self.device).eval()

    def info(self) -> dict:
        info = {"version": self.version, "config": {"batch_size": self.batch_size, "sort_by": "output"}}
        if self.device == "cuda":
            info["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return info

    def _run_batch(self, wl: Workload, idx: list[int]) -> None:
        width = max(len(wl.prompts[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(wl.prompts[i]):] = torch.tensor(wl.prompts[i])
            mask[r, width - len(wl.prompts[i]):] = 1
        n = max(wl.max_tokens[i] for i in idx)
        with torch.no_grad():
            self.model.generate(ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=n,
                                min_new_tokens=n, do_sample=wl.temperature > 0, temperature=wl.temperature or None,
                                top_p=None, top_k=None, pad_token_id=0)

    def generate(self, wl: Workload) -> tuple[list[int], list[float | None], dict]:
        if wl.logprobs is not None or wl.json_schema is not None or not wl.ignore_eos:
            raise NotImplementedError("the hf peer runs fixed-length generation only (no logprobs, no schema, "
                                      "no stop at EOS)")
        order = sorted(range(len(wl.prompts)), key=lambda i: wl.max_tokens[i])
        for b in range(0, len(order), self.batch_size):
            self._run_batch(wl, order[b: b + self.batch_size])
        if self.device == "cuda":
            torch.cuda.synchronize()
        return list(wl.max_tokens), [None] * len(wl.prompts), {}

    def reset_prefix_cache(self) -> None:
        pass                                    # no cache between calls

    def close(self) -> None:
        del self.model
