"""Time AIOS's Triton kernels on the GPU against their baselines and rooflines.

    python benchmarks/bench_kernels.py [--quick] [--sweep prefill,decode] [--out benchmarks/results]

- prefill attention (8 x 1024 tokens, 16 q heads / 8 kv heads, head_dim 128, bf16, causal) over
  the paged cache at block sizes 16/64/256, vs torch SDPA on contiguous K/V: ms and TFLOP/s.
- decode attention (batch 1/32/256, context 512..4096) vs the bandwidth floor
  (bytes of K/V read / 3.0 TB/s): us, achieved TB/s, % of floor; at batch 1 and 32 also the
  one-launch merge (`Config.decode_attention_one_launch`: the last split program merges) beside
  the default two launches (split kernel + reduce kernel).
- gemv (batch-1 linear layers of Qwen3-0.6B and 8B) vs cuBLAS (F.linear), with a config sweep.
- fused_gemv: add_rmsnorm_gemv (before qkv / gate_up) vs fused_add_rms_norm then gemv, and
  silu_mul_gemv (down) vs silu_and_mul then gemv, on the same shapes; and the LM head at one row
  (gemv, and the final norm fused into it, vs rms_norm then F.linear), which the engine leaves to cuBLAS.
- rms_norm, fused_add_rms_norm, silu_and_mul, qk_norm_rope (alone and fused with the KV store),
  store_kvcache, sample (one-pass Gumbel-max over a 151,936 vocabulary) vs their torch refs.

Every case checks the kernel's output against its ref before timing it. Decode and the small
kernels are timed inside a CUDA graph (as the engine runs them) over enough distinct copies of
their inputs that the working set exceeds L2, so the bandwidth is HBM's, not L2's.
Writes kernels-<date>-<gpu>.json and .md under --out; prints a table last.
"""

import argparse
import datetime
import json
import math
import os
import traceback

import torch
import torch.nn.functional as F
import triton

from aios.kernels import (
    decode_attention,
    decode_attention_ref,
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
    prefill_attention,
    prefill_attention_ref,
    qk_norm_rope,
    qk_norm_rope_ref,
    qk_norm_rope_store_kvcache,
    qk_norm_rope_store_kvcache_ref,
    rms_norm,
    rms_norm_ref,
    sample,
    sample_ref,
    silu_and_mul,
    silu_and_mul_ref,
    store_kvcache,
)
from aios.kernels.decode_attention import (  # noqa: E402
    DecodeAttentionWorkspace,
    _decode_attention_launch,
    _decode_config,
    _decode_num_splits,
)
from aios.kernels.fused_gemv import add_rmsnorm_gemv, silu_mul_gemv  # noqa: E402
from aios.kernels.gemv import gemv, gemv_config  # noqa: E402
from aios.kernels.prefill_attention import _prefill_attention_launch, _prefill_config  # noqa: E402

HBM_BYTES_PER_S = 3.0e12  # H100 SXM HBM3, the floor the brief names (spec 3.35 TB/s)
L2_FLUSH_BYTES = 256 << 20


def bench_eager(fn, rep_ms=200):
    return triton.testing.do_bench(fn, warmup=25, rep=rep_ms)  # ms, L2 flushed between calls


def bench_graph(make_call, num_copies, calls_per_graph=64, replays=5):
    """ms per call: CUDA graph of calls_per_graph calls cycling through num_copies input copies."""
    calls = [make_call(i % num_copies) for i in range(calls_per_graph)]
    for c in calls[:num_copies]:
        c()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm the allocator on the side stream before capture
        for c in calls[:2]:
            c()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (replays * calls_per_graph)


def copies_for(bytes_per_call):
    return max(1, min(64, math.ceil(L2_FLUSH_BYTES / max(bytes_per_call, 1))))


def max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


def paged_cache(num_seqs, seq_len, block_size, num_kv_heads, head_dim, dtype, gen):
    """A cache holding num_seqs sequences of seq_len tokens in shuffled blocks, plus their tables."""
    blocks_per_seq = triton.cdiv(seq_len, block_size)
    num_blocks = num_seqs * blocks_per_seq
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, dtype=dtype, device="cuda", generator=gen)
    v_cache = torch.randn(shape, dtype=dtype, device="cuda", generator=gen)
    perm = torch.randperm(num_blocks, device="cuda", generator=gen).to(torch.int32)
    return k_cache, v_cache, perm.view(num_seqs, blocks_per_seq)


# ---------------------------------------------------------------------------------------------


PREFILL_SWEEP = [  # (block_m, block_n, num_warps, num_stages)
    (128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 32, 4, 3),
    (64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 4), (64, 32, 4, 3), (64, 64, 8, 3),
]


def bench_prefill(args, results):
    num_seqs, seq_len, num_heads, num_kv_heads, head_dim = 8, 1024, 16, 8, 128
    dtype, gen = torch.bfloat16, torch.Generator(device="cuda").manual_seed(0)
    scale = head_dim ** -0.5
    flops = 4 * num_seqs * num_heads * head_dim * seq_len * (seq_len + 1) / 2  # causal QK^T + PV
    q = torch.randn(num_seqs * seq_len, num_heads, head_dim, dtype=dtype, device="cuda", generator=gen)
    cu = torch.arange(0, (num_seqs + 1) * seq_len, seq_len, dtype=torch.int32, device="cuda")

    # Baseline: SDPA on contiguous [B, H, S, D] tensors (flash/cuDNN backends pick themselves).
    qd = q.view(num_seqs, seq_len, num_heads, head_dim).transpose(1, 2).contiguous()
    kd = torch.randn(num_seqs, num_kv_heads, seq_len, head_dim, dtype=dtype, device="cuda", generator=gen)
    vd = torch.randn_like(kd)
    kr, vr = kd.repeat_interleave(2, 1), vd.repeat_interleave(2, 1)
    sdpa = F.scaled_dot_product_attention
    for name, fn in [
        ("sdpa (K/V repeated to 16 heads)", lambda: sdpa(qd, kr, vr, is_causal=True)),
        ("sdpa (enable_gqa)", lambda: sdpa(qd, kd, vd, is_causal=True, enable_gqa=True)),
    ]:
        try:
            ms = bench_eager(fn)
        except Exception as e:  # noqa: BLE001 - a backend that refuses a shape is a result too
            print(f"prefill {name}: failed: {e}", flush=True)
            continue
        row = dict(kernel="prefill", impl=name, block_size=None, ms=ms, tflops=flops / ms / 1e9)
        results["prefill"].append(row)
        print(f"prefill {name:40s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s", flush=True)
    qd = kd = vd = kr = vr = None  # free before the paged runs

    for block_size in (16, 64, 256):
        k_cache, v_cache, block_tables = paged_cache(num_seqs, seq_len, block_size, num_kv_heads, head_dim, dtype, gen)
        call = (q, k_cache, v_cache, cu, cu, seq_len, seq_len, block_tables, scale)
        err = max_err(prefill_attention(*call), prefill_attention_ref(*call))
        configs = [None] + (PREFILL_SWEEP if "prefill" in args.sweep and block_size != 64 else [])
        for cfg in configs:
            if cfg is None:
                fn = lambda call=call: prefill_attention(*call)
                label = "triton default " + str(tuple(_prefill_config(head_dim, dtype, q.device, seq_len).values()))
            else:
                bm, bn, w, s = cfg
                fn = lambda call=call, bm=bm, bn=bn, w=w, s=s: _prefill_attention_launch(
                    *call[:6], call[7], call[8], block_m=bm, block_n=bn, num_warps=w, num_stages=s)
                label = f"triton sweep {cfg}"
            try:
                ms = bench_eager(fn)
            except Exception as e:  # noqa: BLE001 - out of shared memory etc.
                print(f"prefill bs={block_size} {label}: failed: {type(e).__name__}", flush=True)
                continue
            row = dict(kernel="prefill", impl=label, block_size=block_size, ms=ms,
                       tflops=flops / ms / 1e9, max_abs_err=err)
            results["prefill"].append(row)
            print(f"prefill bs={block_size:3d} {label:40s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s err {err:.1e}",
                  flush=True)
        k_cache = v_cache = block_tables = call = None


# ---------------------------------------------------------------------------------------------


DECODE_SWEEP = [(32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 4, 4), (128, 4, 2), (128, 8, 2), (128, 8, 3)]


def bench_decode(args, results):
    num_heads, num_kv_heads, head_dim, dtype = 16, 8, 128, torch.bfloat16
    gen = torch.Generator(device="cuda").manual_seed(0)
    scale = head_dim ** -0.5
    batches = (1, 32, 256)
    contexts = (512, 4096) if args.quick else (512, 1024, 2048, 4096)
    for batch in batches:
        workspace = DecodeAttentionWorkspace(batch, num_kv_heads, "cuda")   # shared by every copy, as by the layers
        for ctx in contexts:
            kv_bytes = 2 * batch * ctx * num_kv_heads * head_dim * 2
            num_copies = copies_for(kv_bytes)
            for block_size in (16, 64, 256):
                copies = []
                for _ in range(num_copies):
                    k_cache, v_cache, block_tables = paged_cache(
                        batch, ctx, block_size, num_kv_heads, head_dim, dtype, gen)
                    q = torch.randn(batch, num_heads, head_dim, dtype=dtype, device="cuda", generator=gen)
                    lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
                    copies.append((q, k_cache, v_cache, block_tables, lens, scale))
                err = max_err(decode_attention(*copies[0]), decode_attention_ref(*copies[0]))
                cfg = _decode_config(head_dim, dtype, q.device)
                splits = _decode_num_splits(batch, num_kv_heads, block_tables.shape[1] * block_size, q.device,
                                            cfg["block_n"])
                variants = [("default", None)]
                bitwise = None
                if batch in (1, 32) and splits > 1:
                    one_launch = dict(cfg, num_splits=splits, workspace=workspace)
                    bitwise = torch.equal(_decode_attention_launch(*copies[0], **one_launch),
                                          decode_attention(*copies[0]))
                    variants.append(("one launch", one_launch))
                if "decode" in args.sweep and block_size != 64 and (batch, ctx) in ((1, 4096), (32, 2048), (256, 1024)):
                    variants += [(f"sweep {c}", dict(block_n=c[0], num_warps=c[1], num_stages=c[2], num_splits=splits))
                                 for c in DECODE_SWEEP]
                    if batch == 1:
                        variants += [(f"splits {s}", dict(cfg, num_splits=s)) for s in (8, 16, 64)]
                for label, kw in variants:
                    if kw is None:
                        make = lambda i, copies=copies: (lambda: decode_attention(*copies[i]))
                    else:
                        make = lambda i, kw=kw, copies=copies: (lambda: _decode_attention_launch(*copies[i], **kw))
                    ms = bench_graph(make, num_copies)
                    us = ms * 1e3
                    floor_us = kv_bytes / HBM_BYTES_PER_S * 1e6
                    row = dict(kernel="decode", impl=label, batch=batch, context=ctx, block_size=block_size,
                               num_splits=splits if kw is None else kw["num_splits"], us=us,
                               tb_per_s=kv_bytes / (us * 1e-6) / 1e12, floor_us=floor_us,
                               pct_of_floor=100 * floor_us / us, max_abs_err=err)
                    if label == "one launch":
                        row["bitwise_equal_to_default"] = bitwise
                    results["decode"].append(row)
                    print(f"decode b={batch:3d} ctx={ctx:4d} bs={block_size:3d} splits={row['num_splits']:2d} "
                          f"{label:24s} {us:8.1f} us {row['tb_per_s']:5.2f} TB/s floor {floor_us:7.1f} us "
                          f"({row['pct_of_floor']:5.1f}%) err {err:.1e}", flush=True)
                copies = None


# ---------------------------------------------------------------------------------------------


def bench_small_kernels(args, results):
    dtype, gen = torch.bfloat16, torch.Generator(device="cuda").manual_seed(0)
    hidden, inter, num_heads, num_kv_heads, head_dim = 1024, 3072, 16, 8, 128  # Qwen3-0.6B
    cos_sin = torch.randn(40960, head_dim, device="cuda", generator=gen)

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, device="cuda", generator=gen)

    for n in ((1, 256, 8192) if not args.quick else (256, 8192)):
        cases = []
        w = randn(hidden)
        cases.append(("rms_norm", 2 * n * hidden * 2, lambda i, n=n, w=w: (randn(n, hidden), w, 1e-6),
                      rms_norm, rms_norm_ref))
        cases.append(("fused_add_rms_norm", 4 * n * hidden * 2,
                      lambda i, n=n, w=w: (randn(n, hidden), randn(n, hidden), w, 1e-6),
                      fused_add_rms_norm, fused_add_rms_norm_ref))
        cases.append(("silu_and_mul", 3 * n * inter * 2, lambda i, n=n: (randn(n, 2 * inter),),
                      silu_and_mul, silu_and_mul_ref))
        qkv_width = (num_heads + 2 * num_kv_heads) * head_dim

        def qk_args(i, n=n, qkv_width=qkv_width):
            qkv = randn(n, qkv_width)
            q = qkv[:, : num_heads * head_dim].view(n, num_heads, head_dim)
            k = qkv[:, num_heads * head_dim:(num_heads + num_kv_heads) * head_dim].view(n, num_kv_heads, head_dim)
            pos = torch.randint(0, 40960, (n,), device="cuda", generator=gen)
            return (q, k, randn(head_dim), randn(head_dim), pos, cos_sin, 1e-6)
        cases.append(("qk_norm_rope", 2 * n * (num_heads + num_kv_heads) * head_dim * 2, qk_args,
                      qk_norm_rope, qk_norm_rope_ref))

        def kv_args(i, n=n):
            kv = randn(n, 2, num_kv_heads, head_dim)
            cache = torch.empty(triton.cdiv(n, 16) + 1, 16, num_kv_heads, head_dim, dtype=dtype, device="cuda")
            slots = torch.randperm(cache.shape[0] * 16, device="cuda", generator=gen)[:n]
            return (kv[:, 0], kv[:, 1], cache, torch.empty_like(cache), slots)
        cases.append(("store_kvcache", 4 * n * num_kv_heads * head_dim * 2, kv_args, store_kvcache, None))

        def qkv_store_args(i, n=n):
            q, k, qw, kw, pos, cs, eps = qk_args(i)
            v = randn(n, num_kv_heads, head_dim)
            cache = torch.empty(triton.cdiv(n, 16) + 1, 16, num_kv_heads, head_dim, dtype=dtype, device="cuda")
            slots = torch.randperm(cache.shape[0] * 16, device="cuda", generator=gen)[:n]
            return (q, k, v, qw, kw, pos, cs, eps, cache, torch.empty_like(cache), slots)
        cases.append(("qk_norm_rope+store_kv", 2 * n * (num_heads + 3 * num_kv_heads) * head_dim * 2, qkv_store_args,
                      qk_norm_rope_store_kvcache, qk_norm_rope_store_kvcache_ref))
        if n <= 256:
            vocab = 151936

            def sample_args(i, n=n, vocab=vocab):
                keys = torch.randint(0, 2**32, (n,), device="cuda", generator=gen)
                return (randn(n, vocab), torch.full((n,), 0.6, device="cuda"), keys)
            cases.append(("sample (T=0.6)", n * vocab * 2, sample_args, sample, sample_ref))

        for name, nbytes, make_args, triton_fn, ref_fn in cases:
            num_copies = copies_for(nbytes)
            arg_copies = [make_args(i) for i in range(num_copies)]
            err = None
            if ref_fn is not None:
                got, want = triton_fn(*arg_copies[0]), ref_fn(*arg_copies[0])
                got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
                err = max(max_err(a, b) for a, b in zip(got, want))
            impls = [("triton", triton_fn)] + ([("torch ref", ref_fn)] if ref_fn is not None else [])
            for impl, fn in impls:
                us = 1e3 * bench_graph(lambda i, fn=fn, a=arg_copies: (lambda: fn(*a[i])), num_copies)
                row = dict(kernel=name, impl=impl, num_tokens=n, us=us, tb_per_s=nbytes / (us * 1e-6) / 1e12,
                           max_abs_err=err)
                results["small"].append(row)
                print(f"{name:20s} n={n:5d} {impl:10s} {us:8.2f} us {row['tb_per_s']:5.2f} TB/s"
                      + (f" err {err:.1e}" if err is not None and impl == "triton" else ""), flush=True)
            arg_copies = None


# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------


def summary_markdown(results):
    lines = [f"# Kernel benchmark: {results['gpu']}", "",
             f"torch {results['torch']}, triton {results['triton']}, {results['date']}. "
             f"Qwen3-0.6B shapes (16 q heads, 8 kv heads, head_dim 128), bf16.", ""]
    lines += ["## Prefill attention, 8 x 1024 tokens, causal", "",
              "| impl | block size | ms | TFLOP/s |", "|---|---|---|---|"]
    best = {}
    for r in results["prefill"]:
        if r["impl"].startswith("triton sweep"):
            key = r["block_size"]
            if key not in best or r["ms"] < best[key]["ms"]:
                best[key] = r
            continue
        lines.append(f"| {r['impl']} | {r['block_size'] or '-'} | {r['ms']:.3f} | {r['tflops']:.0f} |")
    for r in best.values():
        lines.append(f"| best of sweep: {r['impl'][13:]} | {r['block_size']} | {r['ms']:.3f} | {r['tflops']:.0f} |")
    lines += ["", "## Decode attention (CUDA graph, HBM floor = K/V bytes / 3.0 TB/s)", "",
              "| batch | context | block size | splits | us | TB/s | floor us | % of floor | one launch us |",
              "|---|---|---|---|---|---|---|---|---|"]
    one_launch = {(r["batch"], r["context"], r["block_size"]): r
                  for r in results["decode"] if r["impl"] == "one launch"}
    for r in results["decode"]:
        if r["impl"] == "default":
            one = one_launch.get((r["batch"], r["context"], r["block_size"]))
            one_us = "-" if one is None else f"{one['us']:.1f}" + ("" if one["bitwise_equal_to_default"]
                                                                 else " (output differs!)")
            lines.append(f"| {r['batch']} | {r['context']} | {r['block_size']} | {r['num_splits']} | {r['us']:.1f} | "
                         f"{r['tb_per_s']:.2f} | {r['floor_us']:.1f} | {r['pct_of_floor']:.0f}% | {one_us} |")
    sweep = [r for r in results["decode"] if r["impl"] not in ("default", "one launch")]
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
            shown = [r for r in rows if not r["impl"].startswith("sweep")]
            swept = [r for r in rows if r["impl"].startswith("sweep")]
            if swept:
                best = min(swept, key=lambda r: r["us"])
                shown.append(dict(best, impl="best of sweep " + best["impl"][6:]))
            lines += [f"| {shape} | {n} | {k} | {r['impl']} | {r['us']:.2f} | {r['tb_per_s']:.2f} |" for r in shown]
    if results.get("fused_gemv"):
        lines += ["", "## One-row gemv with the norm / SiLU in its prologue vs the two launches "
                  "(CUDA graph; bytes = the weight)", "",
                  "| model | case | N | K | impl | us | TB/s |", "|---|---|---|---|---|---|---|"]
        for case in dict.fromkeys((r["shape"], r["kind"], r["n"], r["k"]) for r in results["fused_gemv"]):
            rows = [r for r in results["fused_gemv"] if (r["shape"], r["kind"], r["n"], r["k"]) == case]
            shown = [r for r in rows if not r["impl"].startswith("sweep")]
            swept = [r for r in rows if r["impl"].startswith("sweep")]
            if swept:
                best = min(swept, key=lambda r: r["us"])
                shown.append(dict(best, impl="best of sweep " + best["impl"][6:]))
            lines += [f"| {r['shape']} | {r['kind']} | {r['n']} | {r['k']} | {r['impl']} | {r['us']:.2f} | "
                      f"{r['tb_per_s']:.2f} |" for r in shown]
    lines += ["", "## Small kernels (CUDA graph; bytes = reads + writes)", "",
              "| kernel | tokens | impl | us | TB/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['num_tokens']} | {r['impl']} | {r['us']:.2f} | {r['tb_per_s']:.2f} |"
              for r in results["small"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--sweep", default="", help="also sweep tile configs of: prefill,decode,gemv,fused_gemv")
    parser.add_argument("--only", default="prefill,decode,gemv,fused_gemv,small")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    assert torch.cuda.is_available(), "bench_kernels.py needs a CUDA GPU"
    gpu = torch.cuda.get_device_name()
    results = dict(engine="aios", benchmark="kernels", gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                   date=datetime.date.today().isoformat(), hbm_floor_bytes_per_s=HBM_BYTES_PER_S,
                   prefill=[], decode=[], gemv=[], fused_gemv=[], small=[])
    stem = os.path.join(args.out, f"kernels-{results['date']}-{gpu.replace(' ', '-')}")
    os.makedirs(args.out, exist_ok=True)
    for part, fn in (("prefill", bench_prefill), ("decode", bench_decode), ("gemv", bench_gemv),
                     ("fused_gemv", bench_fused_gemv), ("small", bench_small_kernels)):
        if part in args.only.split(","):
            try:
                fn(args, results)
            except Exception:  # noqa: BLE001 - report it, keep the other parts' numbers
                traceback.print_exc()
            torch.cuda.empty_cache()
            with open(stem + ".json", "w") as f:  # after every part: a timeout keeps what was measured
                json.dump(results, f, indent=1)
    md = summary_markdown(results)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print("\n" + md)


if __name__ == "__main__":
    main()
