"""How long a suite will take on an NVIDIA H200, before it starts (and what the budget guard plans with).

The rates are issue 21's H200 table (AIOS main and vLLM 0.26.0, bf16, output tok/s, the slower of the
two engines per row, so the estimate errs long), for the Qwen3-0.6B and Qwen3-8B shapes; another
shape's rate is interpolated between the two (extrapolated beyond them) on a log scale of the
parameters a decode step of the workload reads (`num_params_read`: for an MoE, the experts its batch
routes to, so batch 1 reads the active parameters and a 256-sequence batch nearly all of them; on
the H200 the Qwen3-30B-A3B shape's standard workload took 26 s where the active parameters alone had
said 13), or, for the prefill-bound rows (long16k, prefix, a prompt-length point's prefill), of the
parameters one token computes with (an MoE's active ones). Start-up times are allowances, not
measurements: AIOS's init_s was
3-11 s in benchmarks/results/2026-12-01-nvidia-h200-*.json (plus a process start and the warm-up);
vLLM's start-up (torch.compile, CUDA-graph capture) is not recorded in this repo, so 150 s is an
allowance. Every result file records the measured init_s, to correct these.

The engine runner scales the estimates by how its first workloads really went (`calibrate`), so on
another GPU or on the CPU the guard still skips what will not fit.
"""

from __future__ import annotations

import math

from aios.bench.shapes import num_params_read
from aios.bench.workloads import Workload

_P = {"qwen3-0.6b": 596_049_920, "qwen3-8b": 8_190_735_360}   # num_params of the two reference shapes (dense)
# workload -> (0.6B rate, 8B rate), output tok/s, min(AIOS, vLLM) of issue 21's H200 table
_RATES = {
    "standard": (22056, 9263), "batch1": (560, 192), "batch32": (14347, 5463), "short": (25651, 12400),
    "prefix": (12059, 4848), "long16k": (997, 312), "long16k-warm": (1787, 1094),
}
_PREFILL = (100_000, 20_000)            # prompt tok/s (issue 21: AIOS ~20k on the 8B shape; 0.6B: below its table's)
STARTUP_S = {"aios": 25.0, "vllm": 150.0, "hf": 30.0}
_OVERHEAD_S = 1.0                       # per workload: its untimed warm-up request, the cache reset


def _interp(pair: tuple[float, float], params: int) -> float:
    lo, hi = math.log(_P["qwen3-0.6b"]), math.log(_P["qwen3-8b"])
    t = (math.log(params) - lo) / (hi - lo)
    return math.exp(math.log(pair[0]) + t * (math.log(pair[1]) - math.log(pair[0])))


def _concurrency_rate(n: int, params: int) -> float:
    """Output tok/s at n sequences: log-interpolated between batch1, batch32, standard (256), short (512)."""
    anchors = [(1, "batch1"), (32, "batch32"), (256, "standard"), (512, "short")]
    if n >= 512:
        return _interp(_RATES["short"], params)
    for (n0, w0), (n1, w1) in zip(anchors, anchors[1:]):
        if n0 <= n <= n1:
            t = math.log(n / n0) / math.log(n1 / n0)
            r0, r1 = _interp(_RATES[w0], params), _interp(_RATES[w1], params)
            return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))
    return _interp(_RATES["batch1"], params)


def workload_s(wl: Workload, config: dict) -> float:
    """Seconds the timed part of wl takes on an H200 (an estimate), plus its per-workload overhead."""
    name = wl.name
    # decode streams the weights its batch routes to; prefill is compute, which scales with the
    # parameters one token uses (an MoE's active ones)
    prefill_bound = name in ("long16k", "prefix") or (name.startswith("prompt-len-") and not name.endswith("-decode"))
    params = num_params_read(config, 1 if prefill_bound else len(wl.prompts))
    out = wl.num_output_tokens
    if name in _RATES:
        rate = _interp(_RATES[name], params)
    elif name.startswith("json"):
        rate = _interp(_RATES["batch1" if len(wl.prompts) == 1 else "batch32"], params) / 1.5
    elif name == "logprobs":
        rate = _interp(_RATES["batch32"], params) / 1.2
    elif name.startswith("prompt-len-"):
        longest = max(map(len, wl.prompts))
        if name.endswith("-decode"):        # a decode step at 16 x 16k of context (long16k-warm) or cheaper
            step_s = 256 * 16 / _interp(_RATES["long16k-warm"], params) / 256
            return max(wl.max_tokens) * step_s + _OVERHEAD_S
        return wl.num_prompt_tokens / _interp(_PREFILL, params) * (1 + longest / 32768) + _OVERHEAD_S
    else:                                   # batchN, concurrency-N
        rate = _concurrency_rate(len(wl.prompts), params)
    return out / rate + _OVERHEAD_S


def calibrate(estimated_s: list[float], measured_s: list[float]) -> float:
    """How much slower (> 1) or faster this engine runs than the estimates, from the workloads so far."""
    if not estimated_s:
        return 1.0
    return max(sum(measured_s) / max(sum(estimated_s), 1e-9), 0.05)
