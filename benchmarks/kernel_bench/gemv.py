"""The one-row linear layers: gemv against cuBLAS, the norm / SiLU fused into it, and the gate_up
gemv with SiLU * up in its epilogue (bench_kernels.py's --only gemv,fused_gemv,gemv_silu_and_mul);
and the few-row ones, the opt-in skinny GEMM against cuBLAS (--only skinny_gemm).
"""

import torch
import torch.nn.functional as F

from aios.kernels import (
    fused_add_rms_norm,
    silu_and_mul,
)
from aios.kernels.fused_gemv import add_rmsnorm_gemv, silu_mul_gemv
from aios.kernels.gemv import gemv, gemv_config
from aios.kernels.gemv_silu_and_mul import gemv_silu_and_mul, gemv_silu_and_mul_config
from aios.kernels.skinny_gemm import skinny_gemm, skinny_gemm_config
from aios.layers.cublaslt import cublaslt_linear
from benchmarks.kernel_bench.timing import bench_graph, copies_for, max_err

GEMV_SHAPES = {  # (N, K) of each linear layer at batch 1: qkv, o, gate_up, down
    "qwen3-0.6b": [(4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072)],
    "qwen3-8b": [(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288)],
}


def bench_gemv(args, results):
    dtype, gen = torch.bfloat16, torch.Generator(device="cuda").manual_seed(0)
    sweep = [(bn, bk, w) for bn in (1, 2, 4, 8, 16) for bk in (256, 512, 1024) for w in (2, 4, 8)]
    for shape, layers in GEMV_SHAPES.items():
        for n, k in layers:
            nbytes = n * k * 2
            num_copies = copies_for(nbytes)
            copies = [(torch.randn(1, k, dtype=dtype, device="cuda", generator=gen),
                       torch.randn(n, k, dtype=dtype, device="cuda", generator=gen) / k ** 0.5)
                      for _ in range(num_copies)]
            err = max_err(gemv(*copies[0]), F.linear(*copies[0]))
            cfg = gemv_config(n, k, copies[0][0].device)
            variants = [("cuBLAS F.linear", F.linear, None), ("triton default", gemv, cfg)]
            if "gemv" in args.sweep:
                variants += [(f"sweep {c}", lambda x, w, c=c: gemv(x, w, *c),
                              dict(zip(("block_n", "block_k", "num_warps"), c))) for c in sweep]
            for label, fn, c in variants:
                us = 1e3 * bench_graph(lambda i, fn=fn, a=copies: (lambda: fn(*a[i])), num_copies)
                row = dict(kernel="gemv", shape=shape, n=n, k=k, impl=label, config=c, us=us,
                           tb_per_s=nbytes / (us * 1e-6) / 1e12, max_abs_err=err)
                results["gemv"].append(row)
                if not label.startswith("sweep"):
                    print(f"gemv {shape:10s} N={n:5d} K={k:5d} {label:16s} {us:7.2f} us {row['tb_per_s']:5.2f} TB/s"
                          f" err {err:.1e}", flush=True)
            best = min((r for r in results["gemv"] if r["n"] == n and r["k"] == k and r["shape"] == shape),
                       key=lambda r: r["us"])
            print(f"gemv {shape:10s} N={n:5d} K={k:5d} best: {best['impl']} {best['us']:.2f} us", flush=True)
            copies = None


SKINNY_ROWS = (2, 4, 8, 16, 32, 64, 96, 128, 192, 256)   # past 64: the standard workload's decode batches
SKINNY_SWEEP = [(bn, bk, 4, st, sk) for bn in (64, 128) for bk in (128, 256) for st in (3, 5)
                for sk in (None, 1, 4, 16)]   # sk None: the config's split of K; 1: none


def bench_skinny_gemm(args, results):
    """x [M, K] @ W^T at the GEMV_SHAPES, M = 2 ... 256 rows (a decode batch), skinny_gemm (its
    cp.async and its TMA loads) against cuBLAS and cuBLASLt, in a CUDA graph; bytes = W (what a
    decode step's matmul streams; past ~200 rows the roofline is the FLOPs, 2 M N K at ~989 TFLOP/s)."""
    dtype, gen = torch.bfloat16, torch.Generator(device="cuda").manual_seed(0)
    rows = (2, 32, 192) if args.quick else SKINNY_ROWS
    for shape, layers in GEMV_SHAPES.items():
        for n, k in layers:
            nbytes = n * k * 2
            num_copies = copies_for(nbytes)
            weights = [torch.randn(n, k, dtype=dtype, device="cuda", generator=gen) / k ** 0.5
                       for _ in range(num_copies)]
            for m in rows:
                copies = [(torch.randn(m, k, dtype=dtype, device="cuda", generator=gen), w) for w in weights]
                err = max_err(skinny_gemm(*copies[0]), F.linear(*copies[0]))
                cfg = skinny_gemm_config(m, n, k, copies[0][0].device)
                variants = [("cuBLAS F.linear", F.linear, None), ("cuBLASLt F.linear", cublaslt_linear, None),
                            ("triton skinny default", skinny_gemm, cfg),
                            ("triton skinny tma", lambda x, w: skinny_gemm(x, w, tma=True), cfg)]
                if "skinny_gemm" in args.sweep and m in (8, 32):
                    variants += [(f"sweep {c}", lambda x, w, c=c: skinny_gemm(x, w, *c),
                                  dict(zip(("block_n", "block_k", "num_warps", "num_stages", "split_k"), c)))
                                 for c in SKINNY_SWEEP]
                for label, fn, c in variants:
                    us = 1e3 * bench_graph(lambda i, fn=fn, a=copies: (lambda: fn(*a[i])), num_copies)
                    row = dict(kernel="skinny_gemm", shape=shape, n=n, k=k, m=m, impl=label, config=c, us=us,
                               tb_per_s=nbytes / (us * 1e-6) / 1e12, max_abs_err=err)
                    results["skinny_gemm"].append(row)
                    if not label.startswith("sweep"):
                        print(f"skinny {shape:10s} M={m:3d} N={n:5d} K={k:5d} {label:22s} {us:7.2f} us "
                              f"{row['tb_per_s']:5.2f} TB/s err {err:.1e}"
                              + (f" split_k {c['split_k']}" if c else ""), flush=True)
            weights = copies = None


FUSED_GEMV_SHAPES = {  # (kind, N, K): the norm fuses into qkv and gate_up, the SiLU into down
    "qwen3-0.6b": [("norm", 4096, 1024), ("norm", 6144, 1024), ("silu", 1024, 3072), ("lm_head", 151936, 1024)],
    "qwen3-8b": [("norm", 6144, 4096), ("norm", 24576, 4096), ("silu", 4096, 12288), ("lm_head", 151936, 4096)],
}


FUSED_GEMV_SWEEP = [(bn, bk, w) for bn in (1, 2, 4, 8, 16) for bk in (256, 512, 1024) for w in (4, 8)]


def bench_fused_gemv(args, results):
    """Each fused one-row kernel against the two launches it replaces, in a CUDA graph (bytes = W)."""
    dtype, gen, eps = torch.bfloat16, torch.Generator(device="cuda").manual_seed(0), 1e-6

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, dtype=dtype, device="cuda", generator=gen) * scale

    def norm_then(matmul):
        return lambda x, res, g, w: matmul(fused_add_rms_norm(x, res, g, eps)[0], w)

    fused_norm = lambda x, res, g, w, *config: add_rmsnorm_gemv(x, res, g, eps, w, *config)    # noqa: E731
    variants = {  # kind -> (label, fn of one copy's inputs); the first is the unfused pair
        "norm": [("fused_add_rms_norm + gemv", norm_then(gemv)), ("add_rmsnorm_gemv", fused_norm)],
        "silu": [("silu_and_mul + gemv", lambda x, w: gemv(silu_and_mul(x), w)), ("silu_mul_gemv", silu_mul_gemv)],
        "lm_head": [("fused_add_rms_norm + F.linear", norm_then(F.linear)),
                    ("fused_add_rms_norm + gemv", norm_then(gemv)), ("add_rmsnorm_gemv", fused_norm)],
    }
    for shape, cases in FUSED_GEMV_SHAPES.items():
        for kind, n, k in cases:
            nbytes = n * k * 2
            num_copies = copies_for(nbytes)
            if kind == "silu":
                copies = [(randn(1, 2 * k), randn(n, k, scale=k ** -0.5)) for _ in range(num_copies)]
            else:
                copies = [(randn(1, k), randn(1, k), 1 + 0.1 * randn(k), randn(n, k, scale=k ** -0.5))
                          for _ in range(num_copies)]
            unfused = variants[kind][0][1](*copies[0])
            cases = list(variants[kind])
            if "fused_gemv" in args.sweep and kind != "lm_head":   # every program redoes the prologue: fewer, wider?
                fused = cases[-1][1]
                cases += [(f"sweep {c}", lambda *a, c=c, fused=fused: fused(*a, *c)) for c in FUSED_GEMV_SWEEP]
            for label, fn in cases:
                out = fn(*copies[0])
                err = max_err(out[0] if isinstance(out, tuple) else out, unfused)
                us = 1e3 * bench_graph(lambda i, fn=fn, a=copies: (lambda: fn(*a[i])), num_copies)
                row = dict(kernel="fused_gemv", shape=shape, kind=kind, n=n, k=k, impl=label, us=us,
                           tb_per_s=nbytes / (us * 1e-6) / 1e12, max_abs_err=err)
                results["fused_gemv"].append(row)
                if not label.startswith("sweep"):
                    print(f"fused_gemv {shape:10s} {kind:7s} N={n:6d} K={k:5d} {label:29s} {us:7.2f} us "
                          f"{row['tb_per_s']:5.2f} TB/s err {err:.1e}", flush=True)
            best = min(results["fused_gemv"][-len(cases):], key=lambda r: r["us"])
            print(f"fused_gemv {shape:10s} {kind:7s} N={n:6d} K={k:5d} best: {best['impl']} {best['us']:.2f} us",
                  flush=True)
            copies = None


GATE_UP_SHAPES = {  # (intermediate, hidden): gate_up_proj [2 * intermediate, hidden], down_proj [hidden, intermediate]
    "qwen3-0.6b": (3072, 1024),
    "qwen3-8b": (12288, 4096),
}
GEMV_SILU_SWEEP = [(bn, bk, w) for bn in (1, 2, 4, 8) for bk in (256, 512, 1024) for w in (4, 8)]


def bench_gemv_silu_and_mul(args, results):
    """gemv_silu_and_mul against the two launches it replaces, alone ("gate_up", bytes = the gate_up
    weight) and as the one-token MLP with down_proj's gemv after it ("mlp", bytes = both weights),
    in a CUDA graph over weight copies that exceed L2."""
    dtype, gen = torch.bfloat16, torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, dtype=dtype, device="cuda", generator=gen) * scale

    gate_up_variants = [  # (label, fn(x, w_gate_up)); the first is the engine's unfused pair
        ("gemv + silu_and_mul", lambda x, w: silu_and_mul(gemv(x, w))),
        ("cuBLAS F.linear + silu_and_mul", lambda x, w: silu_and_mul(F.linear(x, w))),
        ("gemv_silu_and_mul", gemv_silu_and_mul),
    ]
    for shape, (inter, hidden) in GATE_UP_SHAPES.items():
        gate_up_bytes, down_bytes = 2 * inter * hidden * 2, hidden * inter * 2
        for kind, nbytes in (("gate_up", gate_up_bytes), ("mlp", gate_up_bytes + down_bytes)):
            num_copies = copies_for(nbytes)
            copies = [(randn(1, hidden), randn(2 * inter, hidden, scale=2 * hidden ** -0.5))
                      + ((randn(hidden, inter, scale=inter ** -0.5),) if kind == "mlp" else ())
                      for _ in range(num_copies)]
            if kind == "gate_up":
                cases = list(gate_up_variants)
                if "gemv_silu_and_mul" in args.sweep:
                    cases += [(f"sweep {c}", lambda x, w, c=c: gemv_silu_and_mul(x, w, None, *c))
                              for c in GEMV_SILU_SWEEP]
            else:
                cases = [("gemv + silu_and_mul + gemv", lambda x, w, w_down: gemv(silu_and_mul(gemv(x, w)), w_down)),
                         ("gemv_silu_and_mul + gemv", lambda x, w, w_down: gemv(gemv_silu_and_mul(x, w), w_down))]
            unfused = cases[0][1](*copies[0])
            first = len(results["gemv_silu_and_mul"])
            for label, fn in cases:
                err = max_err(fn(*copies[0]), unfused)
                us = 1e3 * bench_graph(lambda i, fn=fn, a=copies: (lambda: fn(*a[i])), num_copies)
                row = dict(kernel="gemv_silu_and_mul", shape=shape, kind=kind, intermediate=inter, hidden=hidden,
                           impl=label, us=us, tb_per_s=nbytes / (us * 1e-6) / 1e12, max_abs_err=err)
                if label == "gemv_silu_and_mul":
                    row["config"] = gemv_silu_and_mul_config(inter, hidden, copies[0][0].device)
                results["gemv_silu_and_mul"].append(row)
                if not label.startswith("sweep"):
                    print(f"gemv_silu_and_mul {shape:10s} {kind:7s} I={inter:5d} K={hidden:5d} {label:30s} "
                          f"{us:7.2f} us {row['tb_per_s']:5.2f} TB/s err {err:.1e}", flush=True)
            best = min(results["gemv_silu_and_mul"][first:], key=lambda r: r["us"])
            print(f"gemv_silu_and_mul {shape:10s} {kind:7s} best: {best['impl']} {best['us']:.2f} us", flush=True)
            copies = None
