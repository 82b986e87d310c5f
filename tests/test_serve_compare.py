"""benchmarks/serve_compare.py: its loads, its failure handling, and a real comparison of two aios servers."""

import json
import re
import sys

import pytest

httpx = pytest.importorskip("httpx")      # the server's packages are optional
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from benchmarks import serve, serve_compare  # noqa: E402

FAILS = f'{sys.executable} -c "import sys; sys.exit(3)" {{model}} {{port}}'


def test_a_load_is_burst_rate_or_concurrency():
    assert serve_compare.parse_load("burst") == serve_compare.Load("burst", rate=float("inf"))
    assert serve_compare.parse_load("rate:16").rate == 16.0
    assert serve_compare.parse_load("rate:0.5").serve_argv() == ["--rate", "0.5"]
    assert serve_compare.parse_load("concurrency:8").serve_argv() == ["--concurrency", "8"]


@pytest.mark.parametrize("bad", ["rate:0", "rate:-1", "rate:x", "rate:inf", "rate:", "foo", "burst:2",
                                 "concurrency:0", "concurrency:2.5"])
def test_a_bad_load_is_an_argparse_error(bad, capsys):
    with pytest.raises(SystemExit):
        serve_compare.parse_args(["--shape", "qwen3-0.6b", "--loads", "burst", bad])
    assert "a load is burst, rate:R" in capsys.readouterr().err


def test_defaults_are_aios_and_vllm_under_burst_then_two_rates_at_one_max_model_len():
    args = serve_compare.parse_args(["--shape", "qwen3-0.6b"])
    assert args.engines == ["aios", "vllm"] and [x.name for x in args.loads] == ["burst", "rate:16", "rate:32"]
    assert (args.num_requests, args.num_clients, args.seed, args.max_model_len) == (256, 4, 0, 2048)
    for engine in args.engines:
        cmd = serve_compare.fill(args.commands[engine], "/m dir", 1234, args.max_model_len)
        assert "--port 1234 --max-model-len 2048 --load-format dummy --skip-tokenizer-init" in cmd
        assert "--model '/m dir'" in cmd and "{" not in cmd


def test_an_engine_command_needs_its_placeholders_and_extra_args_are_appended():
    with pytest.raises(SystemExit):
        serve_compare.parse_args(["--shape", "qwen3-0.6b", "--engine-cmd", "x=python -m srv --port {port}"])
    with pytest.raises(SystemExit):                     # a name with no built-in and no --engine-cmd
        serve_compare.parse_args(["--shape", "qwen3-0.6b", "--engines", "sglang"])
    args = serve_compare.parse_args(["--shape", "qwen3-0.6b", "--aios-args", "--device cpu --dtype float32"])
    assert args.commands["aios"].endswith("--log-level warning --device cpu --dtype float32")


def test_a_variant_is_a_builtin_command_under_its_own_name_with_its_args_appended():
    args = serve_compare.parse_args(["--shape", "qwen3-0.6b", "--engines", "aios", "eager", "vllm",
                                     "--variant", "eager=aios:--cudagraph-mixed-tokens 0"])
    assert args.commands["eager"] == serve_compare.BUILTIN_COMMANDS["aios"] + " --cudagraph-mixed-tokens 0"
    assert args.commands["aios"] == serve_compare.BUILTIN_COMMANDS["aios"]      # the base stays as it was
    again = serve_compare.parse_args(["--shape", "qwen3-0.6b", "--engines", "aios", "vllm", "again",
                                      "--variant", "again=aios:"])              # A, B, A: the same server twice
    assert again.commands["again"] == again.commands["aios"] == serve_compare.BUILTIN_COMMANDS["aios"]
    for bad in ("eager=sglang:--x 1", "eager:aios", "aios=aios:--x 1", "e=aios:--x 'unclosed"):
        with pytest.raises(SystemExit):
            serve_compare.parse_args(["--shape", "qwen3-0.6b", "--variant", bad])
    with pytest.raises(SystemExit):                     # one name for two engines
        serve_compare.parse_args(["--shape", "qwen3-0.6b", "--variant", "x=aios:--a 1",
                                  "--engine-cmd", "x=srv --port {port} --model {model}"])


def test_engines_that_fail_to_start_are_each_recorded_and_the_files_still_written(tmp_path):
    code = serve_compare.main(["--model", str(tmp_path), "--engine-cmd", f"dead={FAILS}", "--engine-cmd",
                               f"gone={FAILS}", "--loads", "burst", "rate:5", "--num-requests", "2",
                               "--launch-timeout", "5", "--out", str(tmp_path / "out"), "--tag", "t"])
    assert code == 1
    [path] = (tmp_path / "out").glob("*-serve-compare-t.json")
    doc = json.loads(path.read_text())
    assert [(r["engine"], r["load"]) for r in doc["rows"]] == [("dead", "burst"), ("dead", "rate:5"),
                                                               ("gone", "burst"), ("gone", "rate:5")]
    assert all(r["summary"] is None and "exited with status 3" in r["error"] for r in doc["rows"])
    assert all("exited with status 3" in doc["engines"][e]["error"] for e in ("dead", "gone"))
    assert doc["ratios"] == {load: {"gone": dict.fromkeys(doc["ratios"][load]["gone"])} for load in ("burst", "rate:5")}
    assert "exited with status 3" in path.with_suffix(".md").read_text()


def expected_ratios(doc: dict) -> dict:
    """The first engine vs each other, recomputed from the rows: > 1 means the first is better."""
    engines = doc["settings"]["engines"]
    rows = {(r["engine"], r["load"]): r["summary"] for r in doc["rows"]}
    out = {}
    for load in doc["settings"]["loads"]:
        mine = rows[(engines[0], load)]
        for other in engines[1:]:
            theirs = rows[(other, load)]
            if theirs is None:
                out.setdefault(load, {})[other] = dict.fromkeys(
                    ["output_tok_per_s", "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99"])
                continue
            out.setdefault(load, {})[other] = {
                "output_tok_per_s": mine["output_tok_per_s"] / theirs["output_tok_per_s"],
                **{f"{key}_{p}": theirs[key][p] / mine[key][p]
                   for key in ("ttft_ms", "itl_ms") for p in ("p50", "p99")}}
    return out


@pytest.mark.slow
def test_two_servers_run_every_load_on_the_same_workload_and_a_dead_one_between_costs_no_rows(tiny_ckpt, tmp_path):
    server = f"{sys.executable} -m aios.server --model {{model}} --port {{port}} --device cpu --dtype float32 " \
             "--log-level warning"
    argv = ["--model", tiny_ckpt, "--engines", "first", "dead", "second", "--engine-cmd", f"first={server}",
            "--engine-cmd", f"dead={FAILS}", "--engine-cmd", f"second={server}", "--loads", "burst", "rate:50",
            "--num-requests", "6", "--num-clients", "1", "--input-len", "4", "12", "--output-len", "3", "9",
            "--launch-timeout", "120", "--out", str(tmp_path)]
    assert serve_compare.main(argv) == 1                  # the dead engine's rows are not complete
    [path] = tmp_path.glob("*-serve-compare.json")
    doc = json.loads(path.read_text())
    args = serve_compare.parse_args(argv)
    workload = serve.make_workload(serve_compare.serve_args(args, args.loads[0]))
    rows = {(r["engine"], r["load"]): r for r in doc["rows"]}
    assert sorted(rows) == sorted((e, x) for e in ("first", "dead", "second") for x in ("burst", "rate:50"))
    for engine in ("first", "second"):
        assert doc["engines"][engine]["error"] is None and doc["engines"][engine]["launch_s"] > 0
        for load, mode in (("burst", "rate=inf"), ("rate:50", "rate=50.0")):
            s = rows[(engine, load)]["summary"]
            assert rows[(engine, load)]["error"] is None and s["mode"] == mode
            assert s["completed"] == 6 and s["failed"] == 0
            # ignore_eos, one workload for all: every row streamed exactly the output lengths asked for
            assert s["output_tok_per_s"] * s["duration_s"] == pytest.approx(sum(n for _, n in workload))
            assert s["server_cmd"] == doc["engines"][engine]["cmd"]
    assert all(rows[("dead", x)]["summary"] is None and rows[("dead", x)]["error"] for x in ("burst", "rate:50"))
    expected = expected_ratios(doc)                     # None where "dead" has no numbers
    assert {load: set(v) for load, v in doc["ratios"].items()} == {load: {"dead", "second"} for load in expected}
    for load, by_other in expected.items():
        for other, want in by_other.items():
            got = doc["ratios"][load][other]
            assert got.keys() == want.keys()
            for metric, value in want.items():             # None where an engine has no number
                assert got[metric] is None if value is None else got[metric] == pytest.approx(value, rel=1e-9)
    table = path.with_suffix(".md").read_text()
    ratio_rows, slowest = table.split("Slowest first tokens")
    assert "first vs second (>1: first better)" in ratio_rows and ratio_rows.count("\n| burst |") == 5
    slow = [line for line in slowest.splitlines() if line.startswith("| rate:50 | first | ")]
    worst = max(rows[("first", "rate:50")]["summary"]["requests"], key=lambda q: q["ttft_ms"])
    assert len(slow) == 1 and slow[0].count(" @ ") == 5           # the five slowest of six, slowest first
    assert slow[0].removeprefix("| rate:50 | first | ").startswith(f"{worst['ttft_ms']:,.0f} @ {worst['sent_s']:.2f} s")
    try:
        import matplotlib  # noqa: F401
        assert path.with_suffix(".png").stat().st_size > 0
    except ImportError:
        pass
    for engine in ("first", "second"):                    # each server was stopped after its loads
        port = re.search(r"--port (\d+)", doc["engines"][engine]["cmd"]).group(1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
