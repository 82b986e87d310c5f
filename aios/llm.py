"""The user-facing API.

    llm = LLM("/path/to/Qwen3-0.6B")
    outs = llm.generate(["Hello"], SamplingParams(temperature=0.6, max_tokens=64))
    outs[0]["text"], outs[0]["token_ids"], outs[0]["finish_reason"]

`LLM(model=None)` runs the small bundled model (aios/assets).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from collections.abc import Sequence as SequenceABC

from tqdm.auto import tqdm

from aios.engine.detokenizer import IncrementalDetokenizer
from aios.engine.llm_engine import LLMEngine
from aios.sampling_params import SamplingParams

Message = dict[str, str]


class LLM(LLMEngine):
    def __init__(self, model: str | None = None, device: str | None = None, dtype: str | None = None,
                 **kwargs) -> None:
        if model is None:
            from aios.assets import default_model_path
            model = default_model_path()
        super().__init__(model, device=device, dtype=dtype, **kwargs)

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, prompts: str | list[str] | list[list[int]],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[dict]:
        """Generate for every prompt; outputs come back in input order."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]                                # one prompt (text or token ids)
        if not isinstance(prompts, SequenceABC) or not prompts:
            raise ValueError("prompts must be a str, a list of str, or a list of token-id lists (non-empty)")
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        # validate every request before queueing any, so a bad one leaves the engine untouched
        token_ids = [self.tokenize(p) for p in prompts]
        for ids, p in zip(token_ids, params):
            self.validate(ids, p)
        seqs = [self.add_request(ids, p) for ids, p in zip(token_ids, params)]
        pbar = tqdm(total=len(seqs), desc="Generating", dynamic_ncols=True, disable=not use_tqdm)
        start, num_tokens = time.perf_counter(), 0
        try:
            while any(not s.is_finished for s in seqs):
                outputs = self.step()
                num_tokens += len(outputs)
                done = sum(o.finished for o in outputs)
                if done:
                    pbar.update(done)
                pbar.set_postfix(tok_per_s=f"{num_tokens / (time.perf_counter() - start):.0f}", refresh=False)
        except BaseException:
            for s in seqs:                                     # leave the engine serving
                self.abort_request(s.seq_id)
            raise
        finally:
            pbar.close()
        return [self.output(s) for s in seqs]

    def chat(self, messages: list[Message] | list[list[Message]],
             sampling_params: SamplingParams | list[SamplingParams] | None = None,
             use_tqdm: bool = True) -> list[dict]:
        """Apply the tokenizer's chat template to each conversation, then generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.apply_chat_template(c) for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def apply_chat_template(self, conversation: list[Message]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer of {self.config.model!r} has no chat template")
        ids = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def stream(self, prompt: str | list[int], sampling_params: SamplingParams | None = None) -> Iterator[str]:
        """Yield the text of one request as it is generated (other requests may share the steps)."""
        seq = self.add_request(prompt, sampling_params)
        detokenizer = IncrementalDetokenizer(self, seq)   # holds back half characters and stop-string prefixes
        try:
            while not seq.is_finished:
                self.step()
                if delta := detokenizer.step():
                    yield delta
        finally:
            if not seq.is_finished:
                self.abort_request(seq.seq_id)
