"""Whether a request can run to its end in this engine, decided before it is queued (vLLM's
InputProcessor): its prompt as token ids, and every field of its SamplingParams against this
engine's limits (Config's max_* fields, the KV pool, max_num_seqs) and what it has (a tokenizer).

What stays true: a request that `validate` passed cannot fail inside a step for its own settings
(LLMEngine.step never raises for one request's sake); each check raises a ValueError (a TypeError
for a value of the wrong type) that names the field and what it allows. The format checks of a
request's parts (token-id lists, Unicode, chat messages) are inputs.py's.
"""

from __future__ import annotations

from aios.config import Config
from aios.engine.inputs import check_unicode, describe_type, token_id_list
from aios.layers.logits_processors import LogitsProcessing
from aios.sampling_params import SamplingParams
from aios.structured_output import StructuredOutputManager


class InputProcessor:
    def __init__(self, config: Config, tokenizer, eos_token_ids: list[int], num_kvcache_blocks: int,
                 structured_output: StructuredOutputManager | None) -> None:
        self.config = config
        self.tokenizer = tokenizer                  # None with skip_tokenizer_init: token-id prompts only
        self.eos_token_ids = eos_token_ids
        self.num_kvcache_blocks = num_kvcache_blocks
        self.structured_output = structured_output  # parses constraints (None without a tokenizer)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """A prompt's token ids: a str is encoded; token ids (a list, tuple or 1-D integer array)
        are checked against the vocabulary. Anything else is a TypeError saying what was given."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("skip_tokenizer_init=True: prompts must be lists of token ids")
            check_unicode(prompt, "the prompt")
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        ids = token_id_list(prompt)
        if ids is None:
            hint = " (decode it to a str first)" if isinstance(prompt, (bytes, bytearray)) else ""
            raise TypeError(f"a prompt must be a str or a list of int token ids, got {describe_type(prompt)}{hint}")
        vocab = self.config.hf_config.vocab_size
        if ids and (min(ids) < 0 or max(ids) >= vocab):
            bad = [t for t in ids if not 0 <= t < vocab]
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return ids

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise a ValueError (or TypeError) unless this request can run to its end in this engine."""
        cfg = self.config
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if n >= cfg.max_model_len:
            raise ValueError(f"the prompt has {n} tokens but max_model_len is {cfg.max_model_len} "
                             f"(prompt plus at least one output token must fit)")
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(params).__name__}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(params, name)
            if value is not None and value > cfg.max_logprobs:
                raise ValueError(f"{name}: {value} is more than this engine's max_logprobs={cfg.max_logprobs} "
                                 f"(Config.max_logprobs)")
        # a request's own cost to every step it shares is bounded, as for stop strings below
        if params.bad_words and (len(params.bad_words) > cfg.max_bad_words
                                 or max(map(len, params.bad_words)) > cfg.max_stop_string_len):
            raise ValueError(f"bad_words must hold at most {cfg.max_bad_words} words (Config.max_bad_words) of at most "
                             f"{cfg.max_stop_string_len} characters each (Config.max_stop_string_len)")
        if params.logit_bias and len(params.logit_bias) > cfg.max_logit_bias:
            raise ValueError(f"logit_bias must hold at most {cfg.max_logit_bias} entries (Config.max_logit_bias), "
                             f"got {len(params.logit_bias)}")
        self.logits_processing(params)               # token ids in the vocabulary, bad_words tokenizable
        if params.structured_outputs is not None:
            if self.structured_output is None:
                raise ValueError("structured_outputs needs a tokenizer (skip_tokenizer_init=True)")
            self.structured_output.check(params)        # a bad schema / regex / grammar: ValueError here
        if params.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer (skip_tokenizer_init=True)")
        if len(params.stop_strings) > cfg.max_stop_strings:
            raise ValueError(f"stop must hold at most {cfg.max_stop_strings} strings (Config.max_stop_strings), "
                             f"got {len(params.stop_strings)}")
        if any(len(s) > cfg.max_stop_string_len for s in params.stop_strings):
            raise ValueError(f"stop strings must be at most {cfg.max_stop_string_len} characters long "
                             f"(Config.max_stop_string_len), got one of {max(map(len, params.stop_strings))}")
        for s in params.stop_strings:
            check_unicode(s, "a stop string")
        best_of = params.best_of or params.n
        if best_of > cfg.max_num_seqs:
            field_name = "best_of" if params.best_of else "n"
            raise ValueError(f"{field_name} must be at most max_num_seqs={cfg.max_num_seqs}, got {best_of}: the "
                             f"samples of one prompt are all sampled in one step")
        total = min(n + params.max_tokens, cfg.max_model_len)
        # the last token is sampled, never fed back: its K/V is never written, so it needs no slot
        need = (total - 1 + cfg.kvcache_block_size - 1) // cfg.kvcache_block_size
        if need > self.num_kvcache_blocks:
            raise ValueError(f"a sequence of {total} tokens needs {need} KV blocks but the cache has only "
                             f"{self.num_kvcache_blocks}; lower max_tokens or give the cache more memory")

    def logits_processing(self, params: SamplingParams,
                          prompt_token_ids: list[int] | None = None) -> LogitsProcessing | None:
        """What params do to a row's logits, resolved once (aios/layers/logits_processors.py); a token id
        outside the vocabulary, or bad_words without a tokenizer, is a ValueError."""
        vocab_size = self.config.hf_config.vocab_size
        return LogitsProcessing.from_params(params, self.eos_token_ids, self.tokenizer, vocab_size, prompt_token_ids)
