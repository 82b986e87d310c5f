"""The kernel benchmark's markdown summary: one table per part of the results JSON.
"""

from benchmarks.kernel_bench.timing import with_best_of_sweep


def summary_markdown(results):
    lines = [f"# Kernel benchmark: {results['gpu']}", "",
             f"torch {results['torch']}, triton {results['triton']}, {results['date']}. "
             f"Qwen3-0.6B shapes (16 q heads, 8 kv heads, head_dim 128), bf16.", ""]
    for case in dict.fromkeys((r["seqs"], r["chunk"], r["cached"], r["heads"], r["kv_heads"])
                              for r in results["prefill"]):
        seqs, chunk, cached, heads, kv_heads = case
        after = f" after {cached} cached tokens" if cached else ""
        lines += [f"## Prefill attention, {seqs} x {chunk} tokens{after}, causal, {heads} q / {kv_heads} kv heads",
                  "", "| impl | block size | ms | TFLOP/s |", "|---|---|---|---|"]
        rows = [r for r in results["prefill"]
                if (r["seqs"], r["chunk"], r["cached"], r["heads"], r["kv_heads"]) == case]
        best = {}
        for r in rows:
            if r["impl"].startswith("triton sweep"):
                key = (r["block_size"], r["impl"].endswith("packed"))
                if key not in best or r["ms"] < best[key]["ms"]:
                    best[key] = r
                continue
            lines.append(f"| {r['impl']} | {r['block_size'] or '-'} | {r['ms']:.3f} | {r['tflops']:.0f} |")
        for r in best.values():
            lines.append(f"| best of sweep: {r['impl'][13:]} | {r['block_size']} | {r['ms']:.3f} | {r['tflops']:.0f} |")
        lines.append("")
    lines += ["## Decode attention (CUDA graph, HBM floor = K/V bytes / 3.0 TB/s)", "",
              "| batch | context | block size | splits | us | TB/s | floor us | % of floor |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results["decode"]:
        if r["impl"] == "default":
            lines.append(f"| {r['batch']} | {r['context']} | {r['block_size']} | {r['num_splits']} | {r['us']:.1f} | "
                         f"{r['tb_per_s']:.2f} | {r['floor_us']:.1f} | {r['pct_of_floor']:.0f}% |")
    sweep = [r for r in results["decode"] if r["impl"] != "default"]
    if sweep:
        lines += ["", "Decode config sweep (block_n, num_warps, num_stages) / split counts:", "",
                  "| batch | context | block size | impl | splits | us | TB/s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['batch']} | {r['context']} | {r['block_size']} | {r['impl']} | {r['num_splits']} | "
                  f"{r['us']:.1f} | {r['tb_per_s']:.2f} |" for r in sweep]
    if results.get("gemv"):
        lines += ["", "## Batch-1 linear layers: gemv vs cuBLAS (CUDA graph; bytes = the weight)", "",
                  "| model | N | K | impl | us | TB/s |", "|---|---|---|---|---|---|"]
        for (shape, n, k) in dict.fromkeys((r["shape"], r["n"], r["k"]) for r in results["gemv"]):
            rows = [r for r in results["gemv"] if (r["shape"], r["n"], r["k"]) == (shape, n, k)]
            lines += [f"| {shape} | {n} | {k} | {r['impl']} | {r['us']:.2f} | {r['tb_per_s']:.2f} |"
                      for r in with_best_of_sweep(rows)]
    if results.get("fused_gemv"):
        lines += ["", "## One-row gemv with the norm / SiLU in its prologue vs the two launches "
                  "(CUDA graph; bytes = the weight)", "",
                  "| model | case | N | K | impl | us | TB/s |", "|---|---|---|---|---|---|---|"]
        for case in dict.fromkeys((r["shape"], r["kind"], r["n"], r["k"]) for r in results["fused_gemv"]):
            rows = [r for r in results["fused_gemv"] if (r["shape"], r["kind"], r["n"], r["k"]) == case]
            lines += [f"| {r['shape']} | {r['kind']} | {r['n']} | {r['k']} | {r['impl']} | {r['us']:.2f} | "
                      f"{r['tb_per_s']:.2f} |" for r in with_best_of_sweep(rows)]
    if results.get("gemv_silu_and_mul"):
        lines += ["", "## One-row gate_up gemv with SiLU(gate) * up in its epilogue vs the separate launches "
                  "(CUDA graph; bytes = the weights)", "",
                  "| model | case | I | K | impl | us | TB/s |", "|---|---|---|---|---|---|---|"]
        rows = results["gemv_silu_and_mul"]
        for case in dict.fromkeys((r["shape"], r["kind"]) for r in rows):
            of_case = [r for r in rows if (r["shape"], r["kind"]) == case]
            lines += [f"| {r['shape']} | {r['kind']} | {r['intermediate']} | {r['hidden']} | {r['impl']} | "
                      f"{r['us']:.2f} | {r['tb_per_s']:.2f} |" for r in with_best_of_sweep(of_case)]
    if results.get("skinny_gemm"):
        lines += ["", "## A few rows: skinny_gemm vs cuBLAS (CUDA graph; bytes = the weight)", "",
                  "| model | M | N | K | impl | us | TB/s |", "|---|---|---|---|---|---|---|"]
        rows = results["skinny_gemm"]
        for case in dict.fromkeys((r["shape"], r["m"], r["n"], r["k"]) for r in rows):
            of_case = [r for r in rows if (r["shape"], r["m"], r["n"], r["k"]) == case]
            lines += [f"| {r['shape']} | {r['m']} | {r['n']} | {r['k']} | {r['impl']} | {r['us']:.2f} | "
                      f"{r['tb_per_s']:.2f} |" for r in with_best_of_sweep(of_case)]
    lines += ["", "## Small kernels (CUDA graph; bytes = reads + writes)", "",
              "| kernel | tokens | impl | us | TB/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['num_tokens']} | {r['impl']} | {r['us']:.2f} | {r['tb_per_s']:.2f} |"
              for r in results["small"]]
    return "\n".join(lines) + "\n"
