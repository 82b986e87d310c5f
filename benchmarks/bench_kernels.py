"""Time AIOS's Triton kernels on the GPU against their baselines and rooflines.

    python benchmarks/bench_kernels.py [--quick] [--only gemv,gemv_silu_and_mul] [--sweep prefill,decode] [--out DIR]
    python benchmarks/bench_kernels.py --only prefill --sweep prefill --prefill-block-sizes 256 \
        --prefill-cases 1x16384,1x8192+8192,1x2048+14336 --prefill-heads 16/8,32/8

- prefill attention (by default 8 x 1024 tokens, 16 q heads / 8 kv heads, head_dim 128, bf16,
  causal) over the paged cache at block sizes 16/64/256, vs torch SDPA on contiguous K/V (its own
  pick, FlashAttention-2 and cuDNN pinned) and, for fresh prompts, torch's varlen kernels on packed
  K/V (cuDNN's ragged path and FlashAttention-2, with and without a gather of K/V out of a paged
  cache): ms and TFLOP/s. --prefill-cases / --prefill-heads pick other shapes: long prompts, and
  the chunks of a chunked prefill (SxC+L: a C-token chunk whose first L tokens are in the cache, what the engine
  runs when a prompt is longer than max_num_batched_tokens). Each tile config runs unpacked and,
  where the GQA group is > 1, packed (all q heads of a kv head in one tile). On Hopper, the opt-in
  TMA variant (aios/kernels/prefill_attention_tma.py) runs at each of its TMA_TILES ("triton tma";
  its warp-specialized WS_TILES are refused on the GPU, never timed); where it does not apply (not
  sm_90, a block size its block_n does not divide) the row is skipped with the reason printed.
- decode attention (batch 1/32/256, context 512..4096; --decode-cases others, --decode-splits
  other split counts beside the rule's, --decode-tiles other tiles at each) vs the bandwidth floor
  (bytes of K/V read / 3.0 TB/s): us, achieved TB/s, % of floor.
- gemv (batch-1 linear layers of Qwen3-0.6B and 8B) vs cuBLAS (F.linear), with a config sweep.
- fused_gemv: add_rmsnorm_gemv (before qkv / gate_up) vs fused_add_rms_norm then gemv, and
  silu_mul_gemv (down) vs silu_and_mul then gemv, on the same shapes; and the LM head at one row
  (gemv, and the final norm fused into it, vs rms_norm then F.linear), which the engine leaves to cuBLAS.
- gemv_silu_and_mul: the gate_up gemv with SiLU(gate) * up in its epilogue vs gemv then silu_and_mul
  (and cuBLAS then silu_and_mul), alone and as the whole one-token MLP with down_proj's gemv after it
  (three launches vs two), on the Qwen3-0.6B and 8B shapes (`--only gemv_silu_and_mul`).
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
from torch.nn.attention import SDPBackend, sdpa_kernel

from aios.kernels import (
    decode_attention,
    decode_attention_ref,
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
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
from aios.kernels.decode_attention import _decode_attention_launch, _decode_config, _decode_num_splits  # noqa: E402
from aios.kernels.fused_gemv import add_rmsnorm_gemv, silu_mul_gemv  # noqa: E402
from aios.kernels.gemv import gemv, gemv_config  # noqa: E402
from aios.kernels.gemv_silu_and_mul import gemv_silu_and_mul, gemv_silu_and_mul_config  # noqa: E402
from aios.kernels.prefill_attention import _prefill_attention_launch, _prefill_config  # noqa: E402
from aios.kernels.prefill_attention_tma import (  # noqa: E402
    TMA_TILES,
    _prefill_attention_tma_launch,
    check_prefill_attention_tma,
)

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



def with_best_of_sweep(rows: list[dict]) -> list[dict]:
    """The rows that are not sweep points, then the fastest sweep point (if any) as "best of sweep"."""
    shown = [r for r in rows if not r["impl"].startswith("sweep")]
    swept = [r for r in rows if r["impl"].startswith("sweep")]
    if swept:
        best = min(swept, key=lambda r: r["us"])
        shown.append(dict(best, impl="best of sweep " + best["impl"][6:]))
    return shown

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


# (block_m, block_n, num_warps, num_stages); block_m counts tile rows (with --pack, q heads x positions).
# Every config is a power of two >= 16 with block_n dividing 256 (the engine's block size: one block
# id per key tile, TILE_IN_BLOCK) and block_m >= 4 (the 8B's GQA group, so packing holds a position).
PREFILL_SWEEP = [
    (64, 32, 4, 3), (64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 4, 4), (64, 64, 8, 3),
    (64, 128, 4, 2), (64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3),      # Hopper: wide key tiles
    (128, 32, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4),      # Hopper: 2 warpgroups of rows
    (128, 128, 8, 2), (128, 128, 8, 3),
]


def parse_prefill_cases(text: str) -> list[tuple[int, int, int]]:
    """"8x1024,1x16384,1x8192+8192" -> [(num_seqs, chunk_len, num_cached_tokens), ...]: each of
    num_seqs sequences prefills chunk_len query tokens after num_cached_tokens already in the cache,
    as a chunked-prefill step does for a prompt longer than max_num_batched_tokens."""
    cases = []
    for item in text.split(","):
        seqs, rest = item.split("x")
        chunk, _, cached = rest.partition("+")
        cases.append((int(seqs), int(chunk), int(cached or 0)))
    return cases


def parse_heads(text: str) -> list[tuple[int, int]]:
    """"16/8,32/8" -> [(num_heads, num_kv_heads), ...] (Qwen3-0.6B's and 8B's attention)."""
    return [tuple(int(n) for n in item.split("/")) for item in text.split(",")]


def prefill_error(call, out, num_cached: int, chunk: int) -> float:
    """Max |kernel - ref|: every row when the ref's fp32 [heads, q, k] scores of one sequence fit in
    1 GiB, else sequence 0's first and last 256 query rows (the ref over the same cache, as chunks)."""
    q, k_cache, v_cache, cu_q, cu_k, _, _, block_tables, scale = call
    if q.shape[1] * chunk * (num_cached + chunk) <= 2 ** 28:
        return max_err(out, prefill_attention_ref(*call))
    err = 0.0
    for start in (0, max(0, chunk - 256)):
        rows = min(256, chunk - start)
        span_q = torch.tensor([0, rows], dtype=torch.int32, device=q.device)
        span_k = torch.tensor([0, num_cached + start + rows], dtype=torch.int32, device=q.device)
        want = prefill_attention_ref(q[start:start + rows], k_cache, v_cache, span_q, span_k, rows,
                                     num_cached + start + rows, block_tables, scale)
        err = max(err, max_err(out[start:start + rows], want))
    return err


def varlen_error(out, q, k, v, chunk: int, scale: float) -> float:
    """Max |out - plain attention| over the last query row of every sequence (it sees the whole
    sequence) and the first (it sees one key), fp32."""
    num_seqs, group = q.shape[0] // chunk, q.shape[1] // k.shape[1]
    err = 0.0
    for s in range(num_seqs):
        keys = k[s * chunk:(s + 1) * chunk].float().repeat_interleave(group, 1)        # [chunk, heads, d]
        vals = v[s * chunk:(s + 1) * chunk].float().repeat_interleave(group, 1)
        for row in (0, chunk - 1):
            scores = torch.einsum("hd,khd->hk", q[s * chunk + row].float(), keys[:row + 1]) * scale
            want = torch.einsum("hk,khd->hd", scores.softmax(-1), vals[:row + 1])
            err = max(err, (out[s * chunk + row].float() - want).abs().max().item())
    return err


def bench_prefill(args, results):
    for num_heads, num_kv_heads in parse_heads(args.prefill_heads):
        for num_seqs, chunk, num_cached in parse_prefill_cases(args.prefill_cases):
            bench_prefill_case(args, results, num_seqs, chunk, num_cached, num_heads, num_kv_heads)
            torch.cuda.empty_cache()


def bench_prefill_case(args, results, num_seqs, chunk, num_cached, num_heads, num_kv_heads):
    head_dim, dtype, gen = 128, torch.bfloat16, torch.Generator(device="cuda").manual_seed(0)
    scale, group, seq_len = head_dim ** -0.5, num_heads // num_kv_heads, num_cached + chunk
    # causal QK^T + PV: query i of a chunk sees num_cached + i + 1 keys
    flops = 4 * num_seqs * num_heads * head_dim * (chunk * num_cached + chunk * (chunk + 1) / 2)
    case = dict(seqs=num_seqs, chunk=chunk, cached=num_cached, heads=num_heads, kv_heads=num_kv_heads)
    name = f"{num_seqs}x{chunk}" + (f"+{num_cached}" if num_cached else "") + f" h{num_heads}/{num_kv_heads}"
    q = torch.randn(num_seqs * chunk, num_heads, head_dim, dtype=dtype, device="cuda", generator=gen)
    cu_q = torch.arange(0, (num_seqs + 1) * chunk, chunk, dtype=torch.int32, device="cuda")
    cu_k = torch.arange(0, (num_seqs + 1) * seq_len, seq_len, dtype=torch.int32, device="cuda")

    # Baseline: SDPA on contiguous [B, H, S, D] tensors (flash/cuDNN backends pick themselves);
    # a chunk after a cached prefix is bottom-right causal (causal_lower_right).
    from torch.nn.attention.bias import causal_lower_right
    qd = q.view(num_seqs, chunk, num_heads, head_dim).transpose(1, 2).contiguous()
    kd = torch.randn(num_seqs, num_kv_heads, seq_len, head_dim, dtype=dtype, device="cuda", generator=gen)
    vd = torch.randn_like(kd)
    kr, vr = kd.repeat_interleave(group, 1), vd.repeat_interleave(group, 1)
    sdpa = F.scaled_dot_product_attention
    causal = dict(is_causal=True) if num_cached == 0 else dict(attn_mask=causal_lower_right(chunk, seq_len))
    baselines = [
        (f"sdpa (K/V repeated to {num_heads} heads)", lambda: sdpa(qd, kr, vr, **causal)),
        ("sdpa (enable_gqa)", lambda: sdpa(qd, kd, vd, **causal, enable_gqa=True)),
    ]
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        def pinned(backend=backend):
            with sdpa_kernel(backend):
                return sdpa(qd, kr, vr, **causal)
        baselines.append((f"sdpa {backend.name.lower()} (K/V repeated)", pinned))
    if num_cached == 0:
        # fresh prompts' attention over packed K/V, no block table: what an engine could run for a prefill
        # step with nothing cached, through torch's own kernels. cuDNN's ragged path is timed with K/V
        # repeated to q's heads and with GQA's fewer; "+ gather" first reads the step's K/V rows back
        # out of a paged cache
        kp = kd.transpose(1, 2).reshape(num_seqs * chunk, num_kv_heads, head_dim)
        vp = vd.transpose(1, 2).reshape(num_seqs * chunk, num_kv_heads, head_dim)
        flat_k = torch.empty(2 * kp.shape[0], num_kv_heads, head_dim, dtype=dtype, device="cuda")
        flat_v = torch.empty_like(flat_k)
        slots = torch.randperm(flat_k.shape[0], device="cuda", generator=gen)[:kp.shape[0]]
        flat_k[slots], flat_v[slots] = kp, vp

        def cudnn_varlen(k, v, repeat=True):
            if repeat:
                k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
            return torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu_q, cu_q, chunk, chunk, True, 0.0, True,
                                                           False, scale=scale)[0]
        baselines += [
            ("cudnn varlen (K/V repeated)", lambda: cudnn_varlen(kp, vp)),
            ("cudnn varlen + gather from a cache", lambda: cudnn_varlen(flat_k[slots], flat_v[slots])),
            ("cudnn varlen, K/V not repeated", lambda: cudnn_varlen(kp, vp, repeat=False)),
            ("flash-2 varlen (aten)", lambda: torch.ops.aten._flash_attention_forward(
                q, kp, vp, cu_q, cu_q, chunk, chunk, 0.0, True, False, scale=scale)[0]),
            ("flash-2 varlen + gather from a cache", lambda: torch.ops.aten._flash_attention_forward(
                q, flat_k[slots], flat_v[slots], cu_q, cu_q, chunk, chunk, 0.0, True, False, scale=scale)[0]),
        ]
        # one query row of each sequence checked against plain attention: a kernel that runs is not
        # yet one that computes attention
        checks = {"cudnn varlen (K/V repeated)", "cudnn varlen, K/V not repeated", "flash-2 varlen (aten)"}
    else:
        checks = set()
    for impl, fn in baselines:
        try:
            ms = bench_eager(fn)
        except Exception as e:  # noqa: BLE001 - a backend that refuses a shape is a result too
            print(f"prefill {name} {impl}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            continue
        row = dict(kernel="prefill", impl=impl, block_size=None, ms=ms, tflops=flops / ms / 1e9, **case)
        if impl in checks:
            row["max_abs_err"] = varlen_error(fn(), q, kp, vp, chunk, scale)
        results["prefill"].append(row)
        err = f" err {row['max_abs_err']:.1e}" if "max_abs_err" in row else ""
        print(f"prefill {name} {impl:40s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s{err}", flush=True)
    qd = kd = vd = kr = vr = kp = vp = flat_k = flat_v = None  # free before the paged runs

    packs = (False, True) if group > 1 else (False,)
    for block_size in (int(b) for b in args.prefill_block_sizes.split(",")):
        k_cache, v_cache, block_tables = paged_cache(num_seqs, seq_len, block_size, num_kv_heads, head_dim, dtype, gen)
        call = (q, k_cache, v_cache, cu_q, cu_k, chunk, seq_len, block_tables, scale)
        default = _prefill_config(head_dim, dtype, q.device, chunk, group=group)   # what prefill_attention runs
        variants = [("triton default", default)]
        if group > 1:   # the default tiles in the other packing mode
            other = not default["pack_gqa"]
            variants.append((f"triton default tiles {'packed' if other else 'unpacked'}",
                             _prefill_config(head_dim, dtype, q.device, chunk, group=group, pack_gqa=other)))
        if "prefill" in args.sweep and block_size != 64:
            variants += [(f"triton sweep {cfg}{' packed' if pack else ''}",
                          dict(zip(("block_m", "block_n", "num_warps", "num_stages"), cfg), pack_gqa=pack))
                         for cfg in PREFILL_SWEEP for pack in packs]
        for label, cfg in variants:
            fn = lambda call=call, cfg=cfg: _prefill_attention_launch(*call[:6], call[7], call[8], **cfg)
            try:
                err = prefill_error(call, fn(), num_cached, chunk)
                ms = bench_eager(fn)
            except Exception as e:  # noqa: BLE001 - out of shared memory etc.
                print(f"prefill {name} bs={block_size} {label} {cfg}: failed: {type(e).__name__}", flush=True)
                continue
            row = dict(kernel="prefill", impl=label, block_size=block_size, config=cfg, ms=ms,
                       tflops=flops / ms / 1e9, max_abs_err=err, **case)
            results["prefill"].append(row)
            shown = label if "sweep" in label else f"{label} {tuple(cfg.values())}"
            print(f"prefill {name} bs={block_size:3d} {shown:48s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s "
                  f"err {err:.1e}", flush=True)
        bench_prefill_tma(results, name, case, call, flops, num_cached, chunk)
        k_cache = v_cache = block_tables = call = None


def bench_prefill_tma(results, name, case, call, flops, num_cached, chunk):
    """prefill_attention_tma (the opt-in Hopper TMA variant) at each of its TMA_TILES, each output
    checked against the ref before it is timed; a tile that does not apply is skipped, saying why."""
    q, k_cache = call[0], call[1]
    block_size = k_cache.shape[1]
    try:
        check_prefill_attention_tma(q.shape[2], q.dtype, q.device, block_size)     # dtype, head_dim, Hopper
    except ValueError as e:
        print(f"prefill {name} bs={block_size} triton tma: skipped: {e}", flush=True)
        return
    for tiles in TMA_TILES:
        label = f"triton tma {tiles[:4]}"
        if block_size % tiles[1]:
            print(f"prefill {name} bs={block_size} {label}: skipped: block_n {tiles[1]} does not divide the block",
                  flush=True)
            continue
        fn = lambda tiles=tiles: _prefill_attention_tma_launch(*call[:6], call[7], call[8], *tiles)
        try:
            err = prefill_error(call, fn(), num_cached, chunk)
            ms = bench_eager(fn)
        except Exception as e:  # noqa: BLE001 - a tile its Triton cannot compile, or out of shared memory
            print(f"prefill {name} bs={block_size} {label}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            continue
        row = dict(kernel="prefill", impl=label, block_size=block_size, ms=ms, tflops=flops / ms / 1e9,
                   max_abs_err=err, config=dict(zip(("block_m", "block_n", "num_warps", "num_stages",
                                                     "warp_specialize"), tiles)), **case)
        results["prefill"].append(row)
        print(f"prefill {name} bs={block_size:3d} {label:48s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s "
              f"err {err:.1e}", flush=True)


# ---------------------------------------------------------------------------------------------


DECODE_SWEEP = [(32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 4, 4), (128, 4, 2), (128, 8, 2), (128, 8, 3)]


def bench_decode(args, results):
    num_heads, num_kv_heads, head_dim, dtype = 16, 8, 128, torch.bfloat16
    gen = torch.Generator(device="cuda").manual_seed(0)
    scale = head_dim ** -0.5
    contexts = (512, 4096) if args.quick else (512, 1024, 2048, 4096)
    cases = [(b, c) for b in (1, 32, 256) for c in contexts]
    if args.decode_cases:   # BxC: B sequences of C tokens of context each
        cases = [tuple(int(x) for x in case.split("x")) for case in args.decode_cases.split(",")]
    block_sizes = tuple(int(b) for b in args.decode_block_sizes.split(","))
    split_counts = [int(x) for x in args.decode_splits.split(",")] if args.decode_splits else []
    tiles = [tuple(int(x) for x in t.split("/")) for t in args.decode_tiles.split(",")] if args.decode_tiles else []
    for batch, ctx in cases:
        kv_bytes = 2 * batch * ctx * num_kv_heads * head_dim * 2
        num_copies = copies_for(kv_bytes)
        for block_size in block_sizes:
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
            if "decode" in args.sweep and block_size != 64 and (batch, ctx) in ((1, 4096), (32, 2048), (256, 1024)):
                variants += [(f"sweep {c}", dict(block_n=c[0], num_warps=c[1], num_stages=c[2], num_splits=splits))
                             for c in DECODE_SWEEP]
                if batch == 1:
                    variants += [(f"splits {s}", dict(cfg, num_splits=s)) for s in (8, 16, 64)]
            variants += [(f"splits {s}", dict(cfg, num_splits=s)) for s in split_counts
                         if s != splits and f"splits {s}" not in dict(variants)]
            # --decode-tiles: each tile at the rule's split count and at each of --decode-splits
            for bn, nw, ns in tiles:
                for s in dict.fromkeys([splits, *split_counts]):
                    if (bn, nw, ns) != (cfg["block_n"], cfg["num_warps"], cfg["num_stages"]):
                        variants.append((f"tile {bn}/{nw}/{ns} splits {s}",
                                         dict(block_n=bn, num_warps=nw, num_stages=ns, num_splits=s)))
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


# ---------------------------------------------------------------------------------------------


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
    lines += ["", "## Small kernels (CUDA graph; bytes = reads + writes)", "",
              "| kernel | tokens | impl | us | TB/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['num_tokens']} | {r['impl']} | {r['us']:.2f} | {r['tb_per_s']:.2f} |"
              for r in results["small"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--sweep", default="",
                        help="also sweep tile configs of: prefill,decode,gemv,fused_gemv,gemv_silu_and_mul")
    parser.add_argument("--only", default="prefill,decode,gemv,fused_gemv,gemv_silu_and_mul,small")
    parser.add_argument("--prefill-cases", default="8x1024",
                        help="prefill shapes: SxC (S sequences of C tokens) or SxC+L (a C-token chunk after L "
                             "cached tokens, as chunked prefill runs), comma-separated")
    parser.add_argument("--prefill-heads", default="16/8", help="q/kv heads, comma-separated (8B: 32/8)")
    parser.add_argument("--prefill-block-sizes", default="16,64,256", help="KV block sizes of the prefill cases")
    parser.add_argument("--decode-cases", default="",
                        help="decode shapes BxC (B sequences, C tokens of context each), comma-separated; "
                             "e.g. 16x16384, the long16k workload's decode step (default: 1/32/256 x 512..4096)")
    parser.add_argument("--decode-block-sizes", default="16,64,256", help="KV block sizes of the decode cases")
    parser.add_argument("--decode-splits", default="",
                        help="also time these num_splits at every decode case (the default rule's is the "
                             "'default' row), e.g. 1,2,3,4,6,8,16: where the split count's waves fall")
    parser.add_argument("--decode-tiles", default="",
                        help="also time these decode tiles BLOCK_N/num_warps/num_stages (e.g. 128/8/2,32/4/2) "
                             "at the rule's split count and at each of --decode-splits")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    assert torch.cuda.is_available(), "bench_kernels.py needs a CUDA GPU"
    gpu = torch.cuda.get_device_name()
    results = dict(engine="aios", benchmark="kernels", gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                   date=datetime.date.today().isoformat(), hbm_floor_bytes_per_s=HBM_BYTES_PER_S,
                   prefill=[], decode=[], gemv=[], fused_gemv=[], gemv_silu_and_mul=[], small=[])
    stem = os.path.join(args.out, f"kernels-{results['date']}-{gpu.replace(' ', '-')}")
    os.makedirs(args.out, exist_ok=True)
    for part, fn in (("prefill", bench_prefill), ("decode", bench_decode), ("gemv", bench_gemv),
                     ("fused_gemv", bench_fused_gemv), ("gemv_silu_and_mul", bench_gemv_silu_and_mul),
                     ("small", bench_small_kernels)):
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
