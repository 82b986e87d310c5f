"""What a suite or a scaling run leaves behind: a table (workload x engine, with AIOS / peer ratios),
one JSON file (provenance + every row) and a PNG.

The JSON is flat enough for jq: `rows[workload][engine]` is the engine runner's row, `ratios[workload]
[peer]` is AIOS's output tok/s over that peer's, measured in the same call; `engines[engine]` holds
each engine's version, the settings it picked, its start-up time (init_s) and its process's wall time.
"""

from __future__ import annotations

import json
import sys

from aios.bench import workloads


def ratios(result: dict) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    engines = result["engines"]
    if "aios" not in engines:
        return out
    for name in result["workloads"]:
        mine = engines["aios"]["rows"].get(name, {})
        for peer, data in engines.items():
            theirs = data["rows"].get(name, {})
            if peer != "aios" and mine.get("output_tok_per_s") and theirs.get("output_tok_per_s"):
                out.setdefault(name, {})[peer] = round(mine["output_tok_per_s"] / theirs["output_tok_per_s"], 3)
    return out


def to_json(result: dict, provenance: dict, shape: str, mode: str) -> dict:
    """The results file: provenance, the plan, each engine's info and rows, the ratios."""
    engines = result["engines"]
    versions = {e: d["info"].get("version") for e, d in engines.items()}
    return {**provenance, "versions": versions, "shape": shape, "mode": mode, "workloads": result["workloads"],
            "max_model_len": result["max_model_len"], "estimated_s": result["estimated_s"],
            "wall_s": result["wall_s"], "engines": {e: d["info"] for e, d in engines.items()},
            "rows": {w: {e: d["rows"][w] for e, d in engines.items() if w in d["rows"]} for w in result["workloads"]},
            "ratios": ratios(result)}


def _show_ttft(name: str) -> bool:
    try:
        return workloads.by_name(name, num_seqs=1).show_ttft
    except ValueError:
        return False


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def table(doc: dict) -> str:
    """A markdown table: output tok/s per engine, AIOS / each peer, and prompt tok/s and TTFT p50 where
    a row has them; the rows an engine did not run are listed under it with the reason."""
    engines = list(doc["engines"])
    peers = [e for e in engines if e != "aios"] if "aios" in engines else []
    rows = doc["rows"]
    has = lambda key: any(key in r for w in rows for r in rows[w].values())   # noqa: E731
    head = ["workload"] + [f"{e} out tok/s" for e in engines] + [f"aios / {p}" for p in peers]
    if has("prompt_tok_per_s"):
        head += [f"{e} prompt tok/s" for e in engines]
    # TTFT only where it means something (batch 1, a shared prefix, long prompts), not for 256 arrivals at once
    shown = {w for w in doc["workloads"] if _show_ttft(w)}
    ttft = any("ttft_ms" in r for w in shown for r in rows[w].values())
    if ttft:
        head += [f"{e} TTFT p50 ms" for e in engines]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for w in doc["workloads"]:
        cells = [w]
        for e in engines:
            r = rows[w].get(e, {})
            cells.append(_num(r.get("output_tok_per_s")) if "output_tok_per_s" in r else "skipped")
            if "output_tok_per_s" not in r:
                notes.append(f"- {w}, {e}: {r.get('skipped') or r.get('error') or 'not run'}"[:400])
            elif r.get("note"):
                notes.append(f"- {w}, {e}: {r['note']}")
        cells += [f"{doc['ratios'][w][p]:.2f}x" if p in doc["ratios"].get(w, {}) else "-" for p in peers]
        if has("prompt_tok_per_s"):
            cells += [_num(rows[w].get(e, {}).get("prompt_tok_per_s")) for e in engines]
        if ttft:
            cells += [_num(rows[w].get(e, {}).get("ttft_ms", {}).get("p50")) if w in shown else "" for e in engines]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return None


def plot_suite(doc: dict, path: str) -> bool:
    """Grouped bars: output tok/s of each engine on each workload (log scale), AIOS / peer over AIOS's bar."""
    plt = _plt()
    if plt is None:
        return False
    engines, names = list(doc["engines"]), doc["workloads"]
    width = 0.8 / len(engines)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(names)), 4.5))
    for j, e in enumerate(engines):
        xs = [i + j * width for i in range(len(names))]
        ys = [doc["rows"][w].get(e, {}).get("output_tok_per_s", 0) for w in names]
        ax.bar(xs, ys, width, label=f"{e} {doc['engines'][e].get('version', '')}".strip())
        for x, y in zip(xs, ys):
            if not y:
                ax.text(x, 0.02, "skipped", rotation=90, ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform())
        if e == "aios":
            for x, y, w in zip(xs, ys, names):
                rs = doc["ratios"].get(w, {})
                if y and rs:
                    ax.text(x, y, " ".join(f"{v:.2f}x" for v in rs.values()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, ha="right")
    if any(r.get("output_tok_per_s") for w in names for r in doc["rows"][w].values()):
        ax.set_yscale("log")
    ax.set_ylabel("output tok/s")
    ax.set_title(f"{doc['shape']} on {doc['gpu']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def scaling_points(doc: dict, engine: str, kind: str) -> dict[str, list[tuple[int, float]]]:
    """(x, y) series of one engine: concurrency -> {"output": [(N, out tok/s)]}; prompt-len ->
    {"prefill": [(L, prompt tok/s)], "decode": [(L, out tok/s at context L)]}."""
    series: dict[str, list[tuple[int, float]]] = {}
    for w in doc["workloads"]:
        r = doc["rows"][w].get(engine, {})
        if not w.startswith(f"{kind}-"):
            continue
        if kind == "concurrency" and "output_tok_per_s" in r:
            series.setdefault("output", []).append((int(w.rsplit("-", 1)[1]), r["output_tok_per_s"]))
        elif kind == "prompt-len" and w.endswith("-decode") and "output_tok_per_s" in r:
            series.setdefault("decode", []).append((int(w.split("-")[2]), r["output_tok_per_s"]))
        elif kind == "prompt-len" and "prompt_tok_per_s" in r:
            series.setdefault("prefill", []).append((int(w.split("-")[2]), r["prompt_tok_per_s"]))
    return series


def plot_scaling(doc: dict, kind: str, path: str) -> bool:
    plt = _plt()
    if plt is None:
        return False
    panels = ["output"] if kind == "concurrency" else ["prefill", "decode"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    labels = {"output": "output tok/s", "prefill": "prompt tok/s (prefill, cold cache)",
              "decode": "output tok/s (decode at that context)"}
    for ax, panel in zip(axes[0], panels):
        for e in doc["engines"]:
            pts = scaling_points(doc, e, kind).get(panel, [])
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"{e} {doc['engines'][e].get('version', '')}".strip())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent sequences (in 128 / out 256)" if kind == "concurrency" else "prompt length, tokens")
        ax.set_ylabel(labels[panel])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc['shape']} on {doc['gpu']}: throughput vs {kind}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_ladder(result: dict, path: str) -> None:
    """`--ladder`: one bar per lesson's engine settings (and per peer), log scale."""
    plt = _plt()
    if plt is None:
        return
    rows = result["ladder"]
    labels = [f"L{r['lesson']}" for r in rows] + [p for p in result.get("peers", {})]
    values = [r["output_tok_per_s"] for r in rows] + [p["output_tok_per_s"] for p in result.get("peers", {}).values()
                                                       if "output_tok_per_s" in p]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(labels[: len(values)], values, color=["tab:blue"] * len(rows) + ["tab:gray"] * (len(values) - len(rows)))
    ax.set_ylabel("output tok/s")
    ax.set_yscale("log")
    ax.set_title(f"AIOS lesson ladder: {result['shape']} on {result['gpu']}")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(doc: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
