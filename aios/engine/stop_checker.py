"""When a sequence stops: EOS, a stop token, a stop string, max_tokens or the context length.

The scheduler asks once per sampled token (Scheduler.postprocess); the answer is a pure function of
the sequence's tokens, so this object holds only what the answer needs from the model and config.
"""

from __future__ import annotations

from aios.engine.sequence import Sequence


class StopChecker:
    def __init__(self, eos_token_ids: list[int], max_model_len: int, tokenizer=None) -> None:
        self.eos_token_ids = set(eos_token_ids)
        self.max_model_len = max_model_len
        self.tokenizer = tokenizer            # None: no stop strings (LLMEngine.validate refuses them)

    def check(self, seq: Sequence, idx: int) -> tuple[str, str | int | None] | None:
        """(finish_reason, stop_reason) once seq's token at index idx ends it, else None.

        stop_reason is the token id or stop string that matched ("stop"), None for "length". Before
        min_tokens output tokens nothing stops a sequence but its length (its stop tokens are masked
        from the logits until then, aios/layers/logits_processors.py; stop strings wait too)."""
        p, token = seq.sampling_params, seq.token_ids[idx]
        num_output = idx + 1 - seq.num_prompt_tokens
        if num_output >= p.min_tokens:
            stop = self._stop(seq, idx, token)
            if stop is not None:
                return stop
        if num_output >= p.max_tokens or idx + 1 >= self.max_model_len:
            return "length", None
        return None

    def _stop(self, seq: Sequence, idx: int, token: int) -> tuple[str, str | int] | None:
        p = seq.sampling_params
        if (not p.ignore_eos and token in self.eos_token_ids) or token in p.stop_token_ids:
            return "stop", token
        if p.stop_strings:
            # a stop string can only newly appear in text that ends with this token: decode a
            # window as long as the longest stop string (+ slack for tokens of partial characters)
            window = max(map(len, p.stop_strings)) + 8
            tail = self.tokenizer.decode(seq.token_ids[max(seq.num_prompt_tokens, idx + 1 - window): idx + 1],
                                         skip_special_tokens=True)
            for stop in p.stop_strings:
                if stop in tail:
                    return "stop", stop
        return None

    def finishes_at_launch(self, seq: Sequence) -> bool:
        """seq, which just had a token launched, ends on "length" whatever that token is."""
        return seq.num_output_tokens >= seq.sampling_params.max_tokens or len(seq) >= self.max_model_len
