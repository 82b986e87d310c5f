"""benchmark.py --suite / --scaling: one engine start for every workload, a table, JSON and a PNG.

- The runner loop (aios/bench/engine_runner.py) with a fake engine: a refused workload is skipped
  with the engine's reason and the next still runs; cold workloads start on an empty prefix cache,
  a warm one on the cache its `after` workload left (primed untimed when it did not just run); the
  budget guard skips what its calibrated estimate says will not fit, keeping what ran.
- The parent kills an engine process that overruns its budget and keeps the rows it printed.
- vLLM's arguments (aios/bench/peers/vllm_runner.py) against a fake `vllm` whose classes take only
  the keyword names vLLM 0.26 has, so a typo fails here and not in the GPU call.
- End to end on the CPU with a tiny shape: the suite and the concurrency curve write their table,
  JSON and PNG, AIOS starts once; the hf peer runs beside it (slow).
"""

import json
import os
import sys
import time
import types

import pytest

from aios.bench import engine_runner, report, suite, workloads
from aios.bench.offline import main as bench_main
from aios.bench.peers import vllm_runner
from aios.bench.shapes import shape_config, write_shape

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=512, max_position_embeddings=2048)
OPTIONS = dict(input_len=8, output_len=4, vocab=512)


class FakeEngine:
    """Records what the runner asks; refuses workloads named in `refuse`; each call costs `step_s` of `clock`."""

    name = "fake"

    def __init__(self, refuse=(), clock=None, step_s=0.0):
        self.calls, self.refuse, self.clock, self.step_s = [], set(refuse), clock, step_s

    def info(self):
        return {"version": "0"}

    def generate(self, wl):
        self.calls.append(("generate", wl.name, len(wl.prompts)))
        if wl.name.removesuffix("-probe") in self.refuse:
            raise ValueError(f"{wl.name}: not applied by this engine yet")
        if self.clock is not None:
            self.clock[0] += self.step_s
        return list(wl.max_tokens), [0.001] * len(wl.prompts), {}

    def reset_prefix_cache(self):
        self.calls.append(("reset",))

    def close(self):
        pass


def run(engine, names, deadline=None):
    rows = []
    engine_runner.run_workloads(engine, names, OPTIONS, deadline, shape_config("qwen3-0.6b"), emit=rows.append)
    return {r["workload"]: r for r in rows}


def test_a_refused_workload_is_skipped_with_the_engines_reason_and_the_next_still_runs():
    rows = run(FakeEngine(refuse={"logprobs"}), ["batch1", "logprobs", "batch2"])
    assert "refused" in rows["logprobs"]["skipped"] and "not applied" in rows["logprobs"]["skipped"]
    assert rows["batch1"]["output_tok_per_s"] > 0 and rows["batch2"]["output_tokens"] == 2 * 4


def test_cold_workloads_start_empty_and_a_warm_one_runs_on_the_cache_its_after_left():
    engine = FakeEngine()
    run(engine, ["prefix", "long16k", "long16k-warm"])
    calls = [c for c in engine.calls if c[0] == "reset" or not c[1].endswith("-probe")][1:]   # not the warm-up
    assert calls == [("reset",), ("generate", "prefix", 64), ("reset",), ("generate", "long16k", 16),
                     ("generate", "long16k-warm", 16)]
    alone = FakeEngine()
    rows = run(alone, ["long16k-warm"])
    calls = [c for c in alone.calls if c[0] == "reset" or not c[1].endswith("-probe")][1:]
    assert calls == [("reset",), ("generate", "long16k", 16), ("generate", "long16k-warm", 16)]   # primed
    assert "primed" in rows["long16k-warm"]["note"]
    refused = FakeEngine(refuse={"long16k"})
    run(refused, ["long16k", "long16k-warm"])                                 # long16k left nothing: prime
    assert ("generate", "long16k", 16) in refused.calls


def test_prompt_rate_is_reported_for_long_prompts_and_prefill_points():
    rows = run(FakeEngine(), ["prompt-len-4096", "prompt-len-4096-decode"])
    assert rows["prompt-len-4096"]["prompt_tok_per_s"] > 0 and rows["prompt-len-4096"]["output_tokens"] == 16
    assert rows["prompt-len-4096-decode"]["output_tokens"] == 16 * 64
    assert "note" not in rows["prompt-len-4096-decode"]                     # ran right after its prefill pass


def test_budget_guard_skips_what_will_not_fit_and_keeps_what_ran(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(engine_runner.time, "time", lambda: clock[0])
    # every call takes 10 s: the warm-up ends at 1010, batch1 (probe + run) at 1030, ten times its
    # estimate, so the guard then expects batch2 to take ~20 s: it fits before 1060, batch4 does not
    rows = run(FakeEngine(clock=clock, step_s=10.0), ["batch1", "batch2", "batch4", "batch8"], deadline=1060.0)
    assert "output_tok_per_s" in rows["batch1"] and "output_tok_per_s" in rows["batch2"]
    for name in ("batch4", "batch8"):
        assert rows[name]["skipped"].startswith("budget")


def test_an_engine_process_past_its_budget_is_killed_and_its_printed_rows_kept(tmp_path):
    code = ("import time; print('BENCH_RESULT ' + '{\"workload\": \"a\"}', flush=True); time.sleep(60)")
    t = time.time()
    rows, ended = suite.collect([sys.executable, "-c", code], time.time() + 3, str(tmp_path / "log"))
    assert rows == [{"workload": "a"}] and ended.startswith("killed at the budget")
    assert time.time() - t < 30


def test_each_curve_reads_only_its_own_points_from_a_run_of_both():
    rows = {"concurrency-2": {"aios": {"output_tok_per_s": 10.0}},
            "prompt-len-1024": {"aios": {"output_tok_per_s": 1.0, "prompt_tok_per_s": 500.0}},
            "prompt-len-1024-decode": {"aios": {"output_tok_per_s": 7.0}}}
    doc = {"workloads": list(rows), "rows": rows}
    assert report.scaling_points(doc, "aios", "concurrency") == {"output": [(2, 10.0)]}
    assert report.scaling_points(doc, "aios", "prompt-len") == {"prefill": [(1024, 500.0)], "decode": [(1024, 7.0)]}


def test_workloads_past_the_shapes_context_are_planned_out_with_the_reason():
    fits, refused, need = suite.plan(["batch1", "long16k", "long16k-warm"], shape_config("qwen3-0.6b", **TINY), {})
    assert fits == ["batch1"] and need == 128 + 512
    assert suite.plan(["batch1"], shape_config("qwen3-0.6b"), {"input_len": 8, "output_len": 4})[2] == 64
    assert "max_position_embeddings is 2048" in refused["long16k"]
    assert suite.scaling_workloads("prompt-len", 32768)[-2:] == ["prompt-len-32704", "prompt-len-32704-decode"]


# vLLM 0.26's names, as keyword-only signatures: an argument vLLM does not have is a TypeError here
class _SamplingParams:
    def __init__(self, *, temperature=1.0, max_tokens=16, ignore_eos=False, detokenize=True, logprobs=None,
                 structured_outputs=None, seed=None):
        self.kw = dict(temperature=temperature, max_tokens=max_tokens, ignore_eos=ignore_eos, detokenize=detokenize,
                       logprobs=logprobs, structured_outputs=structured_outputs)


class _StructuredOutputsParams:
    def __init__(self, *, json=None, regex=None, choice=None, grammar=None, json_object=None):
        self.json = json


def fake_vllm(monkeypatch) -> dict:
    seen: dict = {"resets": 0, "params": []}

    class LLM:
        def __init__(self, *, model, load_format="auto", skip_tokenizer_init=False, max_model_len=None,
                     gpu_memory_utilization=0.9, seed=0, enforce_eager=False, disable_log_stats=True):
            seen["llm"] = dict(model=model, load_format=load_format, skip_tokenizer_init=skip_tokenizer_init,
                               max_model_len=max_model_len)

        def generate(self, prompts, sampling_params, *, use_tqdm=True):
            assert all(set(p) == {"prompt_token_ids"} for p in prompts)
            seen["params"] += sampling_params
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[0] * sp.kw["max_tokens"])],
                                          metrics=None) for sp in sampling_params]

        def reset_prefix_cache(self):
            seen["resets"] += 1

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = LLM, _SamplingParams, "0.26.0"
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda *, prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    sp = types.ModuleType("vllm.sampling_params")
    sp.StructuredOutputsParams = _StructuredOutputsParams
    for name, mod in (("vllm", vllm), ("vllm.inputs", inputs), ("vllm.sampling_params", sp)):
        monkeypatch.setitem(sys.modules, name, mod)
    return seen


def test_vllm_arguments_name_only_what_vllm_has_and_carry_each_workloads_settings(monkeypatch, tmp_path, capsys):
    seen = fake_vllm(monkeypatch)
    model = write_shape("qwen3-0.6b", str(tmp_path), **TINY)
    opts = {**OPTIONS, "max_model_len": 640}
    assert engine_runner.main(["--engine", "vllm", "--model", model, "--workloads", "batch2", "logprobs", "json1",
                               "--options", json.dumps(opts)]) == 0
    lines = [json.loads(x[len(engine_runner.PREFIX):]) for x in capsys.readouterr().out.splitlines()]
    rows = {r["workload"]: r for r in lines if "workload" in r}
    assert lines[-1] == {"engine": "vllm", "done": True}
    assert all("output_tok_per_s" in rows[w] for w in ("batch2", "logprobs", "json1")), rows
    assert seen["llm"] == dict(model=model, load_format="dummy", skip_tokenizer_init=True, max_model_len=640)
    kws = [p.kw for p in seen["params"]]
    assert any(k["logprobs"] == 5 for k in kws)
    schemas = [k["structured_outputs"].json for k in kws if k["structured_outputs"] is not None]
    assert schemas and all(s == workloads.JSON_SCHEMA for s in schemas)
    assert all(k["detokenize"] is False for k in kws)
    json1 = [k for k in kws if k["structured_outputs"] is not None]
    assert all(k["ignore_eos"] is False for k in json1) and seen["resets"] >= 3
    assert [r for r in lines if r.get("info")][0]["version"] == "0.26.0"


def test_vllm_loads_the_tokenizer_only_where_the_directory_has_one(tmp_path):
    with_tok = write_shape("qwen3-0.6b", str(tmp_path), with_tokenizer=True)
    assert vllm_runner.llm_kwargs(with_tok, {})["skip_tokenizer_init"] is False
    assert vllm_runner.llm_kwargs(write_shape("qwen3-0.6b", str(tmp_path)), {})["skip_tokenizer_init"] is True


def test_vllm_keeps_per_request_timings_only_when_asked_and_reads_its_ttft(monkeypatch, tmp_path):
    model = write_shape("qwen3-0.6b", str(tmp_path))
    assert "disable_log_stats" not in vllm_runner.llm_kwargs(model, {})
    assert vllm_runner.llm_kwargs(model, {"vllm_log_stats": True})["disable_log_stats"] is False
    out = types.SimpleNamespace(metrics=types.SimpleNamespace(first_token_latency=0.25))
    assert vllm_runner._ttft(out) == 0.25 and vllm_runner._ttft(types.SimpleNamespace(metrics=None)) is None
    fake_vllm(monkeypatch)
    engine = vllm_runner.VLLMEngine(model, {"vllm_log_stats": True})
    assert engine.kwargs["disable_log_stats"] is False


@pytest.fixture(scope="module")
def tiny_shape(tmp_path_factory) -> str:
    return write_shape("qwen3-0.6b", str(tmp_path_factory.mktemp("shape")), **TINY)


def cli(tmp_path, *argv) -> dict:
    out = tmp_path / "results"
    assert bench_main(["--device", "cpu", "--out", str(out), "--log-dir", str(tmp_path / "logs"), *argv]) == 0
    [path] = [str(out / f) for f in os.listdir(out) if f.endswith(".json")]
    assert os.path.exists(path.replace(".json", ".png"))
    with open(path) as f:
        return json.load(f)


def test_suite_runs_every_workload_on_one_aios_start_and_writes_table_json_png(tiny_shape, tmp_path, capsys):
    doc = cli(tmp_path, "--model", tiny_shape, "--suite", "batch1", "batch2", "logprobs", "long16k",
              "--input-len", "8", "--output-len", "4")
    table = capsys.readouterr().out
    assert "| batch1 |" in table and "| long16k | skipped |" in table
    rows = doc["rows"]
    assert rows["batch1"]["aios"]["output_tokens"] == 4 and rows["batch2"]["aios"]["output_tokens"] == 8
    assert "output_tok_per_s" in rows["logprobs"]["aios"] or "refused" in rows["logprobs"]["aios"]["skipped"]
    assert "max_position_embeddings" in rows["long16k"]["aios"]["skipped"]
    assert doc["engines"]["aios"]["init_s"] > 0 and doc["aios_git"] is not None and doc["gpu"].startswith("CPU")
    [log] = [f for f in os.listdir(tmp_path / "logs") if f.endswith("-aios.log")]
    with open(tmp_path / "logs" / log) as f:
        assert f.read().count("AIOS on CPU") == 1                                    # one engine start


def test_concurrency_curve_runs_each_point_and_plots_it(tiny_shape, tmp_path):
    doc = cli(tmp_path, "--model", tiny_shape, "--scaling", "concurrency", "--points", "1", "2", "4",
              "--scaling-output-len", "4")
    assert doc["mode"] == "scaling-concurrency"
    points = report.scaling_points(doc, "aios", "concurrency")["output"]
    assert [n for n, _ in points] == [1, 2, 4] and all(y > 0 for _, y in points)


@pytest.mark.slow
def test_prompt_length_curve_measures_prefill_then_decode_at_each_length(tiny_shape, tmp_path):
    doc = cli(tmp_path, "--model", tiny_shape, "--scaling", "prompt-len", "--points", "64", "128",
              "--scaling-prompt-tokens", "256", "--block-size", "16")
    series = report.scaling_points(doc, "aios", "prompt-len")
    assert [x for x, _ in series["prefill"]] == [64, 128] and [x for x, _ in series["decode"]] == [64, 128]
    decode = doc["rows"]["prompt-len-128-decode"]["aios"]
    assert decode["num_seqs"] == 2 and decode["prefix_cache_hit_tokens"] == 2 * (128 - 16)  # warm: all but a block
    assert doc["rows"]["prompt-len-64"]["aios"]["output_tokens"] == 4


@pytest.mark.slow
def test_suite_runs_the_hf_peer_beside_aios_with_ratios(tiny_shape, tmp_path):
    doc = cli(tmp_path, "--model", tiny_shape, "--suite", "batch2", "json1", "--peer", "hf",
              "--input-len", "8", "--output-len", "4")
    assert doc["rows"]["batch2"]["hf"]["output_tokens"] == 8
    assert doc["ratios"]["batch2"]["hf"] > 0
    assert "refused" in doc["rows"]["json1"]["hf"]["skipped"]


@pytest.mark.gpu
def test_suite_on_the_gpu_measures_long_prompts_cold_then_warm(tmp_path):
    """The 0.6B shape on the GPU: long16k runs on an empty cache, long16k-warm hits what it left."""
    doc = cli_gpu(tmp_path, "--shape", "qwen3-0.6b", "--suite", "batch1", "prefix", "long16k", "long16k-warm",
                  "--max-seconds", "300")
    rows = {w: doc["rows"][w]["aios"] for w in doc["workloads"]}
    assert all("output_tok_per_s" in r for r in rows.values()), rows
    assert rows["long16k"]["prompt_tok_per_s"] > 0 and rows["long16k-warm"]["prompt_tok_per_s"] > 0
    assert rows["long16k"]["prefix_cache_hit_tokens"] == 0
    assert rows["long16k-warm"]["prefix_cache_hit_tokens"] > 0.9 * rows["long16k-warm"]["prompt_tokens"]
    assert rows["batch1"]["decode_tok_per_s"] > 0


@pytest.mark.gpu
def test_suite_runs_vllm_beside_aios_on_the_gpu(tmp_path):
    """Only where vLLM imports (PYTHONPATH=/tmp/site on the GPU machine): its real arguments work."""
    pytest.importorskip("vllm")
    doc = cli_gpu(tmp_path, "--shape", "qwen3-0.6b", "--suite", "batch1", "logprobs", "json1", "--peer", "vllm",
                  "--max-seconds", "400")
    rows = doc["rows"]
    assert all("output_tok_per_s" in rows[w]["vllm"] for w in ("batch1", "logprobs", "json1")), rows
    assert doc["ratios"]["batch1"]["vllm"] > 0 and doc["engines"]["vllm"]["version"]


def cli_gpu(tmp_path, *argv) -> dict:
    out = tmp_path / "results"
    assert bench_main(["--out", str(out), "--log-dir", str(tmp_path / "logs"), *argv]) == 0
    [path] = [str(out / f) for f in os.listdir(out) if f.endswith(".json")]
    with open(path) as f:
        return json.load(f)


def test_an_engine_whose_budget_share_cannot_cover_its_start_is_not_started(tmp_path, capsys):
    model = write_shape("qwen3-0.6b", str(tmp_path), **TINY)
    result = suite.run(["aios"], model, ["batch1"], dict(OPTIONS), 1.0, str(tmp_path / "log"))
    assert result["engines"]["aios"]["rows"]["batch1"]["skipped"].startswith("budget")
    assert "not started" in capsys.readouterr().out and not os.path.exists(str(tmp_path / "log") + "-aios.log")
    doc = report.to_json(result, {"gpu": "CPU"}, "tiny", "suite")
    assert "| batch1 | skipped |" in report.table(doc)
