"""Structured outputs (aios/structured_output, lesson 17): every output follows its constraint, the
mask is what makes it so, free rows are untouched, and the grammar state survives what the engine
does to a sequence (preemption, chunked prefill, prefix caching, async scheduling)."""

import json
import re
import threading

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from aios import LLM, SamplingParams
from aios.assets import default_model_path
from aios.bench.json_schemas import random_schema
from aios.engine.llm_engine import GRAMMAR_WAIT_S
from aios.sampling_params import StructuredOutputsParams as S
from aios.structured_output import GrammarCompiler, StructuredOutputGrammar
from helpers import assert_no_leaked_blocks

# a dev extra: a GPU machine without it skips this file instead of failing `pytest -m gpu`'s collection
jsonschema = pytest.importorskip("jsonschema")

REGEX = r"(lord|god) [0-9]{1,3}, [a-z]{2,8}\."
CHOICE = ["Moses", "Aaron", "Miriam"]
PROMPTS = ["The lord said unto Moses", "In the beginning", "And it came to pass", "Answer:"]


def valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False


@pytest.fixture(scope="module")
def bible_tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def compiler(bible_tokenizer):
    return GrammarCompiler(bible_tokenizer, 4096, [bible_tokenizer.eos_token_id], max_threads=1)


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    engine = LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256)
    yield engine
    engine.close()


# ---- the compiler and the grammar, no model ------------------------------------------------------

@pytest.mark.parametrize("spec, field", [
    (S(json={"type": "objec"}), "json"), (S(json="{not json"), "json"), (S(json="[1, 2]"), "json"),
    (S(json={"properties": {"a": {"$ref": "#/defs/missing"}}}), "json"), (S(regex="(ab"), "regex"),
    (S(grammar="root ::= undefined_rule"), "grammar"), (S(grammar="start: undefined_rule"), "grammar"),
])
@pytest.mark.parametrize("method", ["check", "compile"])
def test_a_bad_constraint_is_a_value_error_naming_its_field(compiler, spec, field, method):
    """`check` (no tokenizer: what add_request runs) refuses what `compile` refuses."""
    with pytest.raises(ValueError, match=rf"^structured_outputs\.{field}: "):
        getattr(compiler, method)(spec)


def test_compiled_grammars_are_cached_by_spec_least_recently_used_out(bible_tokenizer):
    c = GrammarCompiler(bible_tokenizer, 4096, [0], cache_size=2, max_threads=1)
    a = c.compile(S(json={"type": "object", "properties": {"x": {"type": "integer"}}}))
    assert c.compile(S(json='{"type": "object", "properties": {"x": {"type": "integer"}}}')) is a   # same spec
    c.compile(S(regex="a+"))
    c.compile(S(choice=["x", "y"]))                      # evicts the schema: the least recently used
    assert c.compile(S(regex="a+")) is c.compile(S(regex="a+"))
    assert c.compile(S(json={"type": "object", "properties": {"x": {"type": "integer"}}})) is not a


def test_the_json_guard_clears_exactly_the_tokens_holding_a_control_byte(compiler):
    compiler._xgrammar_compiler()
    import xgrammar as xgr
    info = xgr.TokenizerInfo.from_huggingface(compiler.tokenizer, vocab_size=4096)
    want = [not any(b < 0x20 for b in t) for t in info.decoded_vocab[:4096]]
    bits = np.unpackbits(compiler._json_guard.view(np.uint8), bitorder="little")[:4096]
    assert 0 < sum(want) < 4096 and bits.astype(bool).tolist() == want


def random_walk(grammar, vocab_size: int, rng: np.random.Generator, max_steps: int = 400) -> list[int]:
    """Follow the mask with uniformly random allowed tokens (adversarial: any allowed token may come)."""
    g = StructuredOutputGrammar(grammar)
    bitmask = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)
    tokens = []
    while not g.is_terminated and len(tokens) < max_steps:
        g.fill(bitmask, 0)
        allowed = np.flatnonzero(np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[:vocab_size])
        tokens.append(int(rng.choice(allowed)))
        g.accept(tokens[-1])
    assert g.is_terminated, "the walk did not end: a bounded schema must end"
    return tokens


def test_any_token_the_mask_allows_keeps_json_valid(compiler, bible_tokenizer):
    """30 random schemas, random walks: each text parses and validates (the control-byte guard
    included: without it xgrammar lets bounded strings hold raw control bytes)."""
    rng = np.random.default_rng(0)
    for seed in range(30):
        schema = random_schema(seed)
        tokens = random_walk(compiler.compile(S(json=schema)), 4096, rng)
        assert tokens[-1] == bible_tokenizer.eos_token_id
        text = bible_tokenizer.decode(tokens[:-1])
        assert valid(text, schema), (seed, text)


def test_any_token_the_mask_allows_keeps_regex_choice_and_grammars_matched(compiler, bible_tokenizer):
    rng = np.random.default_rng(1)
    cases = [(S(regex=REGEX), lambda t: re.fullmatch(REGEX, t)), (S(choice=CHOICE), lambda t: t in CHOICE),
             (S(grammar='root ::= "yes" | "no" | "maybe " [0-9]'), lambda t: re.fullmatch(r"yes|no|maybe [0-9]", t)),
             (S(grammar='start: "(" NUMBER ")"\nNUMBER: /[0-9]{1,3}/'), lambda t: re.fullmatch(r"\([0-9]{1,3}\)", t))]
    for spec, ok in cases:
        for _ in range(5):
            text = bible_tokenizer.decode(random_walk(compiler.compile(spec), 4096, rng)[:-1])
            assert ok(text), (spec, text)


def test_json_object_starts_with_a_brace_and_nothing_else(compiler, bible_tokenizer):
    g = StructuredOutputGrammar(compiler.compile(S(json_object=True)))
    bitmask = torch.zeros(1, 128, dtype=torch.int32)
    g.fill(bitmask, 0)
    allowed = np.flatnonzero(np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little"))
    texts = [bible_tokenizer.decode([t]) for t in allowed]
    assert "{" in texts and all(t.startswith("{") for t in texts), texts


def test_properties_come_out_in_the_schemas_order(compiler, bible_tokenizer):
    for names in (["name", "age"], ["age", "name"]):
        schema = {"type": "object", "properties": {n: {"type": "integer"} for n in names}, "required": names}
        g = StructuredOutputGrammar(compiler.compile(S(json=schema)))
        for t in bible_tokenizer.encode('{"', add_special_tokens=False):
            g.accept(t)
        bitmask = torch.zeros(1, 128, dtype=torch.int32)
        g.fill(bitmask, 0)
        allowed = np.flatnonzero(np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little"))
        assert all(names[0].startswith(bible_tokenizer.decode([t])) for t in allowed), names


def test_eos_is_allowed_only_where_the_grammar_may_end(compiler):
    g = StructuredOutputGrammar(compiler.compile(S(regex="ab?")))
    bitmask = torch.zeros(1, 128, dtype=torch.int32)
    eos_allowed = lambda: bool(bitmask[0, 0] & 1)      # noqa: E731 (token 0 is the bundled model's EOS)
    g.fill(bitmask, 0)
    assert not eos_allowed()
    g.accept(compiler.tokenizer.encode("a")[0])
    g.fill(bitmask, 0)
    assert eos_allowed()                               # "a" is complete, "ab" still possible


# ---- the engine ----------------------------------------------------------------------------------

def constrained(spec, **kw) -> SamplingParams:
    return SamplingParams(**{"temperature": 0.9, "max_tokens": 120, "seed": 0, **kw}, structured_outputs=spec)


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_every_output_follows_its_constraint_async_on_and_off(tiny_ckpt, async_scheduling):
    schemas = [random_schema(s) for s in range(6)]
    params = ([constrained(S(json=s), seed=i) for i, s in enumerate(schemas)]
              + [constrained(S(regex=REGEX), seed=i) for i in range(3)]
              + [constrained(S(choice=CHOICE), seed=i) for i in range(3)])
    with LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256,
             async_scheduling=async_scheduling) as llm:
        outs = llm.generate([PROMPTS[i % 4] for i in range(len(params))], params, use_tqdm=False)
        assert_no_leaked_blocks(llm)
    for o, s in zip(outs[:6], schemas):
        assert o["finish_reason"] == "stop" and valid(o["text"], s), o["text"]
    assert all(re.fullmatch(REGEX, o["text"]) for o in outs[6:9]), [o["text"] for o in outs[6:9]]
    assert all(o["text"] in CHOICE for o in outs[9:]), [o["text"] for o in outs[9:]]


def test_async_scheduling_does_not_change_constrained_tokens(tiny_ckpt):
    params = [constrained(S(json=random_schema(s)), seed=s) for s in range(4)] + [SamplingParams(max_tokens=20, seed=9)]
    tokens = []
    for async_scheduling in (True, False):
        with LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256,
                 async_scheduling=async_scheduling) as llm:
            tokens.append([o["token_ids"] for o in llm.generate(PROMPTS + ["x"], params, use_tqdm=False)])
    assert tokens[0] == tokens[1]


def test_without_the_mask_the_same_requests_mostly_do_not_follow(llm):
    """The control: the mask does the work, not the prompts."""
    schemas = [random_schema(s) for s in range(8)]
    free = llm.generate(PROMPTS * 2, [SamplingParams(temperature=0.9, max_tokens=60, seed=i) for i in range(8)],
                        use_tqdm=False)
    assert sum(valid(o["text"], s) for o, s in zip(free, schemas)) <= 1
    choices = llm.generate(PROMPTS, SamplingParams(temperature=0.9, max_tokens=10, seed=0), use_tqdm=False)
    assert sum(o["text"] in CHOICE for o in choices) == 0


def test_free_rows_keep_their_tokens_beside_constrained_rows(llm):
    free = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
            SamplingParams(temperature=0.8, seed=3, max_tokens=24, ignore_eos=True)]
    alone = [o["token_ids"] for o in llm.generate(PROMPTS[:2], free, use_tqdm=False)]
    mixed = llm.generate(PROMPTS[:2] + PROMPTS, free + [constrained(S(json=random_schema(s))) for s in range(4)],
                         use_tqdm=False)
    assert [o["token_ids"] for o in mixed[:2]] == alone


def test_logprobs_and_penalties_combine_with_a_constraint(llm):
    """The grammar mask comes first, then the scores, then the penalties: a constrained row that
    asks for logprobs and a repetition penalty still follows its constraint, one score per token,
    each sampled token's finite, and they sum to the cumulative logprob."""
    choices = ["alpha beta", "gamma delta", "epsilon"]
    params = SamplingParams(temperature=0, max_tokens=16, logprobs=3, repetition_penalty=1.3,
                            structured_outputs=S(choice=choices))
    out = llm.generate(PROMPTS[:3], params, use_tqdm=False)
    for o in out:
        assert o["text"] in choices
        assert len(o["logprobs"]) == len(o["token_ids"])
        for token, entry in zip(o["token_ids"], o["logprobs"]):
            assert token in entry and entry[token].logprob > float("-inf")
        total = sum(e[t].logprob for t, e in zip(o["token_ids"], o["logprobs"]))
        assert o["cumulative_logprob"] == pytest.approx(total)
    assert_no_leaked_blocks(llm)


def test_preempted_and_chunked_sequences_resume_their_grammar(tiny_ckpt):
    """A pool too small for the batch preempts (the output tokens are recomputed, the grammar kept)
    and a small token budget chunks the prompts; the greedy tokens equal a roomy engine's."""
    prompts = [p * 6 for p in PROMPTS]                       # ~30-60 tokens: several chunks of 16
    params = [constrained(S(json=random_schema(s)), temperature=0) for s in range(4)]
    with LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256) as roomy:
        want = [o["token_ids"] for o in roomy.generate(prompts, params, use_tqdm=False)]
    with LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256, num_kvcache_blocks=14,
             max_num_batched_tokens=16) as tight:
        outs = tight.generate(prompts, params, use_tqdm=False)
        assert tight.scheduler.num_preemptions > 0
        assert_no_leaked_blocks(tight)
    assert [o["token_ids"] for o in outs] == want
    assert all(valid(o["text"], random_schema(s)) for s, o in enumerate(outs))


def test_a_prefix_cache_hit_leaves_the_grammar_at_its_start(llm):
    prompt = PROMPTS[0] * 8                                   # several full 16-token blocks
    p = constrained(S(json=random_schema(1)), temperature=0)
    first, second = (llm.generate([prompt], p, use_tqdm=False)[0] for _ in range(2))
    assert second["num_cached_tokens"] > 0 and second["token_ids"] == first["token_ids"]


def test_the_sequence_ends_where_the_grammar_does_even_with_ignore_eos(llm):
    o = llm.generate([PROMPTS[0]], constrained(S(choice=CHOICE), ignore_eos=True), use_tqdm=False)[0]
    assert o["finish_reason"] == "stop" and o["text"] in CHOICE


def test_n_samples_each_follow_the_constraint_with_a_grammar_of_their_own(llm):
    out = llm.generate([PROMPTS[1]], constrained(S(choice=CHOICE), n=4, temperature=1.0), use_tqdm=False)[0]
    assert len(out["outputs"]) == 4 and all(o["text"] in CHOICE for o in out["outputs"])


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_a_constrained_sequence_cut_by_max_tokens_ends_on_length_and_frees_its_blocks(tiny_ckpt, async_scheduling):
    """Its last token is launched as FINISHING (async) while the step before is still being read."""
    with LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256,
             async_scheduling=async_scheduling) as llm:
        outs = llm.generate(PROMPTS, [constrained(S(json=random_schema(s)), max_tokens=3) for s in range(4)],
                            use_tqdm=False)
        assert_no_leaked_blocks(llm)
        llm.scheduler.check_invariants()
    assert all(o["finish_reason"] == "length" and len(o["token_ids"]) == 3 for o in outs)
    assert all(o["text"].startswith("{") for o in outs)


def test_bad_constraints_are_refused_at_add_request_and_the_engine_keeps_serving(llm):
    for spec in (S(json={"type": "objec"}), S(regex="(ab"), S(grammar="root ::= nothing")):
        with pytest.raises(ValueError, match=r"^structured_outputs\."):
            llm.generate([PROMPTS[0]], constrained(spec), use_tqdm=False)
    assert not llm.scheduler.waiting and not llm.scheduler.running
    o = llm.generate([PROMPTS[0]], constrained(S(choice=CHOICE)), use_tqdm=False)[0]
    assert o["text"] in CHOICE


def test_an_engine_without_a_tokenizer_refuses_constraints(tiny_ckpt):
    with LLM(tiny_ckpt, device="cpu", skip_tokenizer_init=True, max_model_len=128) as llm:
        with pytest.raises(ValueError, match="structured_outputs needs a tokenizer"):
            llm.generate([[5, 6, 7]], constrained(S(regex="a")), use_tqdm=False)


# ---- compiling off the engine's thread ---------------------------------------------------------------

class HeldCompile:
    """A test double for GrammarCompiler.compile: each compile waits until `release()` (the
    worker thread blocks; the engine's thread must not), then runs the real one."""

    def __init__(self, compiler, fail: bool = False) -> None:
        self.real, self.fail = compiler.compile, fail
        self.started, self.go = threading.Event(), threading.Event()

    def __call__(self, spec):
        self.started.set()
        self.go.wait()
        if self.fail:
            raise RuntimeError("injected compile failure")
        return self.real(spec)

    def release(self) -> None:
        self.go.set()


def fresh_schema(name: str) -> dict:
    """A schema no other test compiles (the module's engine caches every spec it sees)."""
    return {"type": "object", "properties": {name: {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": [name]}


def test_a_compiling_request_waits_in_place_while_the_others_step_and_finish(llm, monkeypatch):
    held = HeldCompile(llm.structured_output.compiler)
    monkeypatch.setattr(llm.structured_output.compiler, "compile", held)
    p = constrained(S(json=fresh_schema("waits")), temperature=0)
    try:
        a = llm.add_request(PROMPTS[0], p)
        free = [llm.add_request(q, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)) for q in PROMPTS[1:]]
        assert held.started.wait(10)
        while not all(s.is_finished for s in free):        # the free requests, queued behind it, run
            llm.step()
            llm.scheduler.check_invariants()
            assert a.grammar is None and a.status.name == "WAITING" and llm.scheduler.waiting[0] is a
        assert all(s.finish_reason == "length" and len(s.output_token_ids) == 6 for s in free)
        assert llm.step() == [] and llm.has_unfinished_requests()    # waits (bounded), does not end it
        held.release()
        while not a.is_finished:
            llm.step()
            llm.scheduler.check_invariants()
    finally:
        held.release()
    assert_no_leaked_blocks(llm)
    again = llm.generate([PROMPTS[0]], p, use_tqdm=False)[0]        # cached now: the grammar is ready at once
    assert a.finish_reason == "stop" and valid(llm.output(a)["text"], fresh_schema("waits"))
    assert a.output_token_ids == again["token_ids"]


def test_a_cached_spec_is_ready_at_add_request(llm):
    p = constrained(S(choice=CHOICE))
    llm.generate([PROMPTS[0]], p, use_tqdm=False)
    seq = llm.add_request(PROMPTS[1], p)
    assert seq.grammar is not None
    llm.abort_request(seq.seq_id)


def test_a_request_that_only_waits_for_its_compile_is_finished_by_generate(tiny_ckpt, monkeypatch):
    """Nothing else to run: each step blocks briefly on the compile (does not spin, does not give up)."""
    with LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256) as llm:
        held = HeldCompile(llm.structured_output.compiler)
        monkeypatch.setattr(llm.structured_output.compiler, "compile", held)
        step, idle_steps = llm.step, []

        def counted():
            outputs = step()
            idle_steps.append(not outputs and not held.go.is_set())
            return outputs

        monkeypatch.setattr(llm, "step", counted)
        timer = threading.Timer(1.0, held.release)           # the worker's compile ends a while later
        timer.start()
        try:
            out = llm.generate([PROMPTS[0]], constrained(S(regex=REGEX), n=2), use_tqdm=False)[0]
        finally:
            timer.cancel()
            held.release()
        # each idle step blocked up to GRAMMAR_WAIT_S on the compile: a spinning loop would take thousands
        assert 1 <= sum(idle_steps) <= 1.0 / GRAMMAR_WAIT_S + 2
        assert all(re.fullmatch(REGEX, o["text"]) for o in out["outputs"]), out["outputs"]
        assert_no_leaked_blocks(llm)


def test_a_compile_that_fails_finishes_its_request_alone_with_error(llm, monkeypatch):
    held = HeldCompile(llm.structured_output.compiler, fail=True)
    held.release()
    monkeypatch.setattr(llm.structured_output.compiler, "compile", held)
    params = [SamplingParams(temperature=0, max_tokens=5), constrained(S(regex="fails [0-9]"), n=2),
              SamplingParams(temperature=0, max_tokens=5)]
    outs = llm.generate(PROMPTS[:3], params, use_tqdm=False)
    assert [o["finish_reason"] for o in outs[1]["outputs"]] == ["error", "error"]
    assert outs[1]["token_ids"] == []
    assert [o["finish_reason"] for o in (outs[0], outs[2])] == ["length", "length"]
    assert_no_leaked_blocks(llm)


def test_an_aborted_compiling_request_leaves_and_close_shuts_the_compile_pool(tiny_ckpt, monkeypatch):
    llm = LLM(tiny_ckpt, device="cpu", kvcache_block_size=16, max_model_len=256)
    held = HeldCompile(llm.structured_output.compiler)
    monkeypatch.setattr(llm.structured_output.compiler, "compile", held)
    try:
        seq = llm.add_request(PROMPTS[0], constrained(S(regex="aborted")))
        assert held.started.wait(10)
        llm.abort_request(seq.seq_id)
        assert seq.finish_reason == "abort" and not llm.has_unfinished_requests()
        workers = list(llm.structured_output._pool._threads)
        llm.close()
    finally:
        held.release()
    for t in workers:
        t.join(10)
        assert not t.is_alive()
    with pytest.raises(RuntimeError):
        llm.structured_output.compile(constrained(S(regex="after close")))


# ---- the bundled model: the 200 random schemas ---------------------------------------------

@pytest.mark.slow
def test_200_random_schemas_on_the_bundled_model_all_validate_and_without_the_mask_do_not():
    schemas = [random_schema(1000 + s) for s in range(200)]
    prompts = [f"{PROMPTS[s % 4]} {s}" for s in range(200)]
    with LLM(device="cpu", kvcache_block_size=16, max_model_len=512) as llm:
        outs = llm.generate(prompts, [constrained(S(json=s), seed=i, max_tokens=300) for i, s in enumerate(schemas)],
                            use_tqdm=False)
        bad = [(o["finish_reason"], o["text"]) for o, s in zip(outs, schemas) if not valid(o["text"], s)]
        assert not bad, bad[:3]
        free = llm.generate(prompts, [SamplingParams(temperature=0.9, seed=i, max_tokens=100) for i in range(200)],
                            use_tqdm=False)
        assert sum(valid(o["text"], s) for o, s in zip(free, schemas)) < 10
        assert_no_leaked_blocks(llm)


# ---- GPU (the lead's machine) ----------------------------------------------------------------------

@pytest.mark.gpu
def test_constrained_generate_with_cuda_graphs_equals_eager_and_validates():
    schemas = [random_schema(s) for s in range(16)]
    params = [constrained(S(json=s), temperature=0, max_tokens=200) for s in schemas]
    prompts = [PROMPTS[s % 4] for s in range(16)]
    tokens = []
    for eager in (False, True):
        with LLM(device="cuda", dtype="float32", enforce_eager=eager, max_model_len=512) as llm:
            outs = llm.generate(prompts, params, use_tqdm=False)
            assert all(valid(o["text"], s) for o, s in zip(outs, schemas)), [o["text"] for o in outs]
            tokens.append([o["token_ids"] for o in outs])
            assert_no_leaked_blocks(llm)
    assert tokens[0] == tokens[1]


@pytest.mark.gpu
def test_constrained_requests_after_start_up_compile_no_triton_kernel(tiny_ckpt):
    """The bitmask kernel is warmed up with the engine (bf16 and fp32 logits), like every other."""
    from test_gpu_engine import triton_compiles

    with LLM(tiny_ckpt, device="cuda", dtype="bfloat16", max_model_len=256) as llm:
        with triton_compiles() as later:
            for batch in (PROMPTS, PROMPTS[:1]):
                llm.generate(batch, [constrained(S(json=random_schema(s))) for s in range(len(batch))], use_tqdm=False)
        assert not later, "met after start-up:\n" + "\n".join(later)
