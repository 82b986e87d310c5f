"""Decode attention (flash-decoding, CUDA graph) against the bandwidth floor: us, TB/s, % of floor
(bench_kernels.py's --only decode, --decode-cases / --decode-splits / --decode-tiles, --sweep decode).
"""

import torch

from aios.kernels import (
    decode_attention,
    decode_attention_ref,
)
from aios.kernels.decode_attention import _decode_attention_launch, _decode_config, _decode_num_splits
from benchmarks.kernel_bench.timing import HBM_BYTES_PER_S, bench_graph, copies_for, max_err, paged_cache

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
