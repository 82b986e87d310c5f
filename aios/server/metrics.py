"""Server metrics in the Prometheus text exposition format (what `GET /metrics` returns).

Two writers, no shared state: the engine loop keeps EngineCounters (TTFT, finished sequences,
prompt tokens) and a copy travels with every batch of events, beside a snapshot of
`LLMEngine.stats()`; the event loop keeps ServerMetrics (HTTP errors) and renders the latest copies.
The engine loop may be in another process, so the copies are plain picklable data.
"""

from __future__ import annotations

import copy
import time
from collections import Counter

# Time to first token, seconds: from the HTTP request's arrival to its first generated token.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)        # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, upper in enumerate(self.buckets):
            if value <= upper:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def lines(self, name: str, label: str) -> list[str]:
        out, cumulative = [], 0
        for upper, n in zip(self.buckets, self.counts):
            cumulative += n
            out.append(f'{name}_bucket{{{label},le="{upper}"}} {cumulative}')
        out += [f'{name}_bucket{{{label},le="+Inf"}} {self.count}',
                f"{name}_sum{{{label}}} {self.sum}", f"{name}_count{{{label}}} {self.count}"]
        return out


class EngineCounters:
    """Counted by the engine loop alone; `snapshot()` is the copy a thread runner hands to the event loop."""

    def __init__(self) -> None:
        self.ttft = Histogram(TTFT_BUCKETS)     # from a request's arrival to its first token, s
        self.prompt_tokens = 0
        self.finished: Counter = Counter()      # finish_reason -> sequences

    def snapshot(self) -> EngineCounters:
        return copy.deepcopy(self)


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.errors: Counter = Counter()        # HTTP status -> requests refused or failed (event loop only)

    def count_error(self, status: int) -> None:
        self.errors[status] += 1

    def render(self, stats: dict, counters: EngineCounters) -> str:
        """Prometheus text for the engine loop's latest stats and counters plus the server's own series."""
        label = f'model_name="{self.model_name}"'
        out: list[str] = []

        def series(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
            out.extend(f"{name}{{{label}{extra}}} {value}" for extra, value in samples)

        used, total = stats.get("kv_blocks_used", 0), stats.get("kv_blocks_total", 0)
        series("aios_num_requests_running", "gauge", "Sequences in the running batch.",
               [("", stats.get("num_running", 0))])
        series("aios_num_requests_waiting", "gauge", "Sequences waiting to be scheduled.",
               [("", stats.get("num_waiting", 0))])
        series("aios_kv_cache_blocks_used", "gauge", "KV-cache blocks in use.", [("", used)])
        series("aios_kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.", [("", total)])
        series("aios_kv_cache_usage_ratio", "gauge", "Share of KV-cache blocks in use (0..1).",
               [("", used / total if total else 0.0)])
        series("aios_prefix_cache_hit_rate", "gauge", "Share of prompt tokens served by the prefix cache.",
               [("", stats.get("prefix_cache_hit_rate", 0.0))])
        series("aios_num_preemptions_total", "counter", "Sequences preempted (recomputed later).",
               [("", stats.get("num_preemptions", 0))])
        series("aios_generation_tokens_total", "counter", "Tokens generated.",
               [("", stats.get("num_generated_tokens", 0))])
        series("aios_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.",
               [("", counters.prompt_tokens)])
        series("aios_request_success_total", "counter", "Sequences finished, by finish reason.",
               [(f',finish_reason="{r}"', n) for r, n in sorted(counters.finished.items())])
        series("aios_request_errors_total", "counter", "Requests refused or failed, by HTTP status.",
               [(f',status="{s}"', n) for s, n in sorted(self.errors.items())])
        out += ["# HELP aios_time_to_first_token_seconds From request arrival to its first token.",
                "# TYPE aios_time_to_first_token_seconds histogram"]
        out += counters.ttft.lines("aios_time_to_first_token_seconds", label)
        # Prometheus' standard process metric: CPU time of every thread of this (the event loop's)
        # process. Near 1 s per second of wall time, its one GIL is the bottleneck.
        out += ["# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
                "# TYPE process_cpu_seconds_total counter", f"process_cpu_seconds_total {time.process_time()}"]
        return "\n".join(out) + "\n"
