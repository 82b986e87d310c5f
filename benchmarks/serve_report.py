"""The serving comparison's report (benchmarks/serve_compare.py): ratios, the markdown table, the plot.

`doc` is serve_compare's JSON document: settings (engines in order, loads), rows {engine, load,
summary (benchmarks/serve.py's), error}. The first engine is the one every other is compared with,
in RATIO_CONVENTION's orientation: > 1 always means the first engine is better.
"""

from __future__ import annotations

import sys

# (key in the JSON's ratios, summary key, percentile or None, True where a higher value is better)
RATIO_METRICS = (("output_tok_per_s", "output_tok_per_s", None, True),
                 ("ttft_ms_p50", "ttft_ms", "p50", False), ("ttft_ms_p99", "ttft_ms", "p99", False),
                 ("itl_ms_p50", "itl_ms", "p50", False), ("itl_ms_p99", "itl_ms", "p99", False))
RATIO_CONVENTION = ("first engine vs other, > 1 means the first engine is better: output_tok_per_s is "
                    "first / other; ttft_ms_* and itl_ms_* are other / first")


def metric(row: dict | None, key: str, percentile: str | None) -> float | None:
    """One metric of a row's summary (None where the row has no summary or the value is missing)."""
    s = (row or {}).get("summary")
    if not s:
        return None
    return s[key] if percentile is None else s[key][percentile]


def ratios(doc: dict) -> dict[str, dict[str, dict[str, float | None]]]:
    """ratios[load][other][metric]: the first engine vs `other` in RATIO_CONVENTION's orientation,
    None where either value is missing or zero."""
    engines, rows = doc["settings"]["engines"], {(r["engine"], r["load"]): r for r in doc["rows"]}
    first, out = engines[0], {}
    for load in doc["settings"]["loads"]:
        for other in engines[1:]:
            cell = out.setdefault(load, {}).setdefault(other, {})
            for name, key, percentile, higher_is_better in RATIO_METRICS:
                mine, theirs = metric(rows.get((first, load)), key, percentile), \
                    metric(rows.get((other, load)), key, percentile)
                if not mine or not theirs:
                    cell[name] = None
                else:
                    cell[name] = mine / theirs if higher_is_better else theirs / mine
    return out


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def table(doc: dict) -> str:
    """Markdown: one row per load and metric, a column per engine, then the first engine vs each other."""
    engines = doc["settings"]["engines"]
    first, others = engines[0], engines[1:]
    rows = {(r["engine"], r["load"]): r for r in doc["rows"]}
    labels = {"output_tok_per_s": "output tok/s", "ttft_ms_p50": "TTFT p50 ms", "ttft_ms_p99": "TTFT p99 ms",
              "itl_ms_p50": "ITL p50 ms", "itl_ms_p99": "ITL p99 ms"}
    head = ["load", "metric", *engines, *[f"{first} vs {o} (>1: {first} better)" for o in others]]
    lines = [f"Ratios: {doc['ratio_convention']}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for load in doc["settings"]["loads"]:
        for name, key, percentile, _ in RATIO_METRICS:
            cells = [load, labels[name], *[fmt(metric(rows.get((e, load)), key, percentile)) for e in engines]]
            cells += [f"{r:.2f}x" if (r := doc["ratios"][load][o][name]) is not None else "-" for o in others]
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for r in doc["rows"]:
        if r["error"]:
            notes.append(f"- {r['engine']}, {r['load']}: {r['error']}"[:400])
        elif r["summary"]["failed"]:
            notes.append(f"- {r['engine']}, {r['load']}: {r['summary']['failed']} requests failed: "
                         f"{r['summary']['errors']}"[:400])
    return "\n".join(lines + ([""] + notes if notes else []))


def slowest_first_tokens(doc: dict, n: int = 5) -> str:
    """Markdown: for each load and engine, the n requests of the longest TTFT, with when each was sent
    and its prompt length: a tail of late senders behind a burst reads differently from one of long
    prompts, or of requests spread over the run (rows from serve.py's per-request records)."""
    lines = [f"Slowest first tokens ({n} a row): TTFT ms @ seconds after the first request, prompt tokens; ...", "",
             "| load | engine | requests |", "|---|---|---|"]
    for r in doc["rows"]:
        reqs = [q for q in ((r["summary"] or {}).get("requests") or []) if q["ok"]]
        if not reqs:
            continue
        worst = sorted(reqs, key=lambda q: q["ttft_ms"], reverse=True)[:n]
        cells = "; ".join(f"{q['ttft_ms']:,.0f} @ {q['sent_s']:.2f} s, {q['prompt_tokens']}" for q in worst)
        lines.append(f"| {r['load']} | {r['engine']} | {cells} |")
    return "\n".join(lines) if len(lines) > 4 else ""


def plot(doc: dict, path: str) -> bool:
    """Three panels: output tok/s per load, TTFT p50 / p99 and ITL p50 / p99 per load, a bar per engine."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return False
    engines, loads = doc["settings"]["engines"], doc["settings"]["loads"]
    rows = {(r["engine"], r["load"]): r for r in doc["rows"]}
    panels = [("output tok/s", "output_tok_per_s", [None]), ("TTFT ms", "ttft_ms", ["p50", "p99"]),
              ("ITL ms", "itl_ms", ["p50", "p99"])]
    width = 0.8 / len(engines)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    for ax, (ylabel, key, percentiles) in zip(axes, panels):
        groups = [(load, p) for load in loads for p in percentiles]
        for j, engine in enumerate(engines):
            xs = [i + j * width for i in range(len(groups))]
            ys = [metric(rows.get((engine, load)), key, p) or 0 for load, p in groups]
            ax.bar(xs, ys, width, label=engine)
            for x, y in zip(xs, ys):
                if not y:
                    ax.text(x, 0.02, "no data", rotation=90, ha="center", va="bottom", fontsize=7,
                            transform=ax.get_xaxis_transform())
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))],
                      [load if p is None else f"{load} {p}" for load, p in groups], rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc['settings']['model_label']} on {doc['gpu'] or 'CPU'}: serving, "
                 f"{doc['settings']['num_requests']} requests per load")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
