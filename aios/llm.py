"""The user-facing API.

    llm = LLM("/path/to/Qwen3-0.6B")
    outs = llm.generate(["Hello"], SamplingParams(temperature=0.6, max_tokens=64))
    outs[0]["text"], outs[0]["token_ids"], outs[0]["finish_reason"]

`LLM(model=None)` runs the small bundled model (aios/assets).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from tqdm.auto import tqdm

from aios.engine.detokenizer import IncrementalDetokenizer
from aios.engine.inputs import check_conversation, describe_type, token_id_list
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

    def generate(self, prompts: str | list[str] | list[int] | list[list[int]],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[dict]:
        """Generate for every prompt; outputs come back in input order, one dict per prompt.

        A prompt is a str or its token ids (a list, tuple or 1-D integer array). With n > 1 a
        prompt's dict holds its n samples in "outputs" (each with index, text, token_ids,
        finish_reason); the dict's own text / token_ids / finish_reason are those of sample 0
        ("outputs" is there for n == 1 too). The samples of a prompt share its one prefill. With
        logprobs / prompt_logprobs asked, "logprobs", "prompt_logprobs" and "cumulative_logprob"
        hold the scores ({token id: Logprob} per token, aios/outputs.py).
        With best_of > n, the n samples of the highest cumulative logprob, best first."""
        prompts = self._prompt_list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        # validate every request before queueing any, so a bad one leaves the engine untouched
        token_ids = [self.tokenize(p) for p in prompts]
        for ids, p in zip(token_ids, params):
            self.validate(ids, p)
        # one request per prompt: its samples share one prefill (a SequenceGroup when n or best_of > 1)
        requests = [self._enqueue(ids, p) for ids, p in zip(token_ids, params)]
        seqs = [s for r in requests for s in (r.group.seqs if r.group is not None else [r])]
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
        results = []
        for r in requests:
            outs = [self.output(s) for s in (r.group.outputs() if r.group is not None else [r])]
            for j, o in enumerate(outs):
                o["index"] = j
            results.append({**outs[0], "outputs": outs})
        return results

    @staticmethod
    def _prompt_list(prompts: object) -> list:
        """The prompts as a list: one str or one token-id sequence becomes a list of one."""
        one = isinstance(prompts, (str, bytes, bytearray)) or token_id_list(prompts) is not None or (
            isinstance(prompts, (list, tuple)) and any(isinstance(p, (int, float)) for p in prompts))
        if one:                                    # (a list holding numbers is one malformed prompt)
            return [prompts]
        if isinstance(prompts, (list, tuple)) and prompts:
            return list(prompts)
        raise TypeError(f"prompts must be a str, a list of str, or a list of token-id lists (non-empty), "
                        f"got {describe_type(prompts)}")

    def chat(self, messages: list[Message] | list[list[Message]],
             sampling_params: SamplingParams | list[SamplingParams] | None = None,
             use_tqdm: bool = True) -> list[dict]:
        """Apply the tokenizer's chat template to each conversation, then generate."""
        if not isinstance(messages, list) or not messages:
            raise TypeError(f"messages must be a conversation (a list of message dicts) or a list of them, "
                            f"got {describe_type(messages)}")
        conversations = [messages] if isinstance(messages[0], dict) else messages
        prompts = [self.apply_chat_template(c) for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def apply_chat_template(self, conversation: list[Message]) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("chat needs a tokenizer (skip_tokenizer_init=True)")
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer of {self.config.model!r} has no chat template")
        check_conversation(conversation)
        ids = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def stream(self, prompt: str | list[int], sampling_params: SamplingParams | None = None) -> Iterator[str]:
        """Yield the text of one request as it is generated (other requests may share the steps)."""
        if sampling_params is not None and (sampling_params.best_of or sampling_params.n) > 1:
            raise ValueError("n and best_of must be 1 in stream(), which yields one sample; use generate()")
        seq = self.add_request(prompt, sampling_params)
        detokenizer = IncrementalDetokenizer(self, seq)   # holds back half characters and stop-string prefixes
        try:
            while True:
                # Another caller's step (a second stream, a generate) may finish seq while this
                # generator is suspended: read is_finished first, drain, and only then stop.
                finished = seq.is_finished
                if not finished:
                    self.step()
                if delta := detokenizer.step():
                    yield delta
                if finished:
                    break
        finally:
            if not seq.is_finished:
                self.abort_request(seq.seq_id)
