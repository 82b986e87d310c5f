"""benchmarks/serve.py, the load generator, against a real aios.server process it launches itself."""

import json
import socket
import sys

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")      # the server's packages are optional
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from benchmarks import serve  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("load", [["--rate", "inf"], ["--concurrency", "2"],
                                  ["--rate", "50", "--num-clients", "2"], ["--concurrency", "3", "--num-clients", "2"]])
@pytest.mark.slow
def test_serve_benchmark_launches_a_server_measures_every_request_and_stops_it(tiny_ckpt, tmp_path, load):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = (f"{sys.executable} -m aios.server --model {tiny_ckpt} --port {port} --device cpu --dtype float32 "
              f"--log-level warning")
    argv = ["--url", url, "--launch", server, "--launch-timeout", "120", "--num-requests", "6",
            "--input-len", "4", "12", "--output-len", "3", "9", "--engine", "aios-test", "--out", str(tmp_path),
            *load]
    assert serve.main(argv) == 0
    [path] = tmp_path.glob("*-serve-aios-test-*.json")
    s = json.loads(path.read_text())
    args = serve.parse_args(argv)
    workload = serve.make_workload(args)
    assert s["completed"] == 6 and s["failed"] == 0
    # ignore_eos: every request streams exactly the output length it asked for
    assert s["output_tok_per_s"] * s["duration_s"] == pytest.approx(sum(n for _, n in workload))
    assert s["total_tok_per_s"] * s["duration_s"] == pytest.approx(sum(len(p) + n for p, n in workload))
    assert 0 < s["ttft_ms"]["p50"] <= s["e2e_ms"]["p50"] and s["itl_ms"]["p50"] > 0
    assert s["server_cmd"] == server
    rows = s["requests"]                                    # one a request, in workload order
    assert [(r["prompt_tokens"], r["output_tokens"]) for r in rows] == [(len(p), n) for p, n in workload]
    assert min(r["sent_s"] for r in rows) == 0 and all(r["ok"] for r in rows)
    assert all(0 < r["ttft_ms"] <= r["e2e_ms"] and 0 <= r["max_itl_ms"] < r["e2e_ms"] for r in rows)
    assert np.percentile([r["ttft_ms"] for r in rows], 99) == pytest.approx(s["ttft_ms"]["p99"], abs=0.01)
    assert s["client_cpu_per_s"] > 0 and s["server_cpu_per_s"] > 0      # read from the server's /metrics
    with pytest.raises(httpx.HTTPError):                     # the launched server was stopped
        httpx.get(f"{url}/health", timeout=2)


def test_serve_benchmark_reports_a_server_that_never_answers(tmp_path):
    port = free_port()
    never = f"{sys.executable} -c 'import sys; sys.exit(3)'"
    code = serve.main(["--url", f"http://127.0.0.1:{port}", "--launch", never, "--launch-timeout", "30",
                       "--out", str(tmp_path)])
    assert code == 2 and not list(tmp_path.iterdir())


def fake_send(calls, fail_warm_up=False):
    """serve.send that answers at once and records (prompt, max_tokens) of every request."""
    async def send(http, args, prompt, max_tokens):
        calls.append((list(prompt), max_tokens))
        ok = not (fail_warm_up and len(calls) == 1)
        return serve.RequestResult(ok=ok, error="" if ok else "HTTP 503: busy", prompt_tokens=len(prompt),
                                   output_tokens=max_tokens, ttft_s=1e-3, e2e_s=2e-3)
    return send


@pytest.mark.parametrize("warm_up", [True, False])
def test_each_client_warms_up_with_one_unmeasured_request_before_the_load(monkeypatch, warm_up):
    """The first request of a fresh client process pays for its connection and httpx's first-use
    setup (30-50 ms on the H200's host): it is sent before the load and left out of the results."""
    calls = []
    monkeypatch.setattr(serve, "send", fake_send(calls))
    args = serve.parse_args(["--num-requests", "5", "--input-len", "6", "9", "--output-len", "3", "4"]
                            + ([] if warm_up else ["--no-warm-up"]))
    args.model = "m"
    workload = serve.make_workload(args)
    results, duration, _ = serve.run_clients(args, workload)
    assert calls == ([(workload[0][0][:4], 2)] if warm_up else []) + [(p, n) for p, n in workload]
    assert [(r.prompt_tokens, r.output_tokens) for r in results] == [(len(p), n) for p, n in workload]
    assert duration >= 0


def test_a_failing_warm_up_stops_the_load_with_its_error(monkeypatch):
    calls = []
    monkeypatch.setattr(serve, "send", fake_send(calls, fail_warm_up=True))
    args = serve.parse_args(["--num-requests", "3"])
    args.model = "m"
    with pytest.raises(RuntimeError, match="warm-up request failed: HTTP 503"):
        serve.run_clients(args, serve.make_workload(args))
    assert len(calls) == 1


def test_client_processes_report_a_failing_warm_up_and_none_waits_at_the_start_for_ever():
    """Two spawned clients against a port nothing listens on: each warm-up fails, the barrier is
    broken, and the run raises the first process's error instead of hanging."""
    args = serve.parse_args(["--url", f"http://127.0.0.1:{free_port()}", "--num-requests", "4", "--num-clients", "2",
                             "--timeout", "20"])
    args.model = "m"
    with pytest.raises(RuntimeError, match="client process .*warm-up request failed"):
        serve.run_clients(args, serve.make_workload(args))
