#!/usr/bin/env python
"""Lesson 05: allocate the KV cache once, write it by position; fuse the residual add into RMSNorm.

    growing cache (lesson 04)      : torch.cat makes a new, longer K and V tensor every step
    pre-allocated cache (lesson 05): one [layers, max_len, kv_heads, head_dim] tensor each for K
                                     and V, allocated up front; a step writes k_cache[layer, pos] = k
                                     (static_cache_loop.py), and RMSNorm(x, residual) adds and
                                     normalizes in one call (one Triton kernel on a GPU)

Both are teaching loops over lesson 03's own modules (one sequence, plain torch): slow on purpose.
"""

from __future__ import annotations

import sys

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--lengths", type=int, nargs="+", default=None,
                    help="numbers of new tokens to try (default 128 512 1024; 16 with --quick)")
    args = common.setup(ap.parse_args())
    lengths = args.lengths or ([16] if args.quick else [128, 512, 1024])

    import torch

    from aios.kernels import fused_add_rms_norm, fused_add_rms_norm_ref

    loop03 = common.load_module("03_own_the_model/no_cache_loop.py")
    loop04 = common.load_module("04_kv_cache/kv_cache_loop.py")
    loop05 = common.load_module("05_preallocated_kv_cache/static_cache_loop.py")
    print(common.describe(args))
    if args.quick:
        print("--quick: a smoke test (few, short requests); its times say nothing about speed: run without it")
    try:
        model = loop03.load_unfused(args.model, args.device)
    except ValueError as e:                               # a family the teaching model does not compute
        sys.exit(f"error: {e}")
    max_len = model.config.max_position_embeddings
    tok = common.tokenizer(args)                          # a stand-in if the checkpoint has no tokenizer
    prompt = common.PROMPTS[0]
    ids = tok.encode(prompt, add_special_tokens=False)
    loop04.generate_with_cache(model, ids, 4, loop05.for_model(model, 16), fused_norm=True)     # warm-up

    rows = []
    for n in lengths:
        with common.Timer(args.device) as t0:
            a, _, growing = loop04.generate_with_cache(model, ids, n)
        static = loop05.for_model(model, max_len)
        with common.Timer(args.device) as t1:
            b, _, static = loop04.generate_with_cache(model, ids, n, static, fused_norm=True)
        rows.append([n, "growing, torch.cat (lesson 04)", growing.bytes_copied / 2**20, t0.seconds, n / t0.seconds,
                     "-"])
        rows.append([n, "pre-allocated (lesson 05)", static.bytes_copied / 2**20, t1.seconds, n / t1.seconds,
                     "yes" if a == b else "NO"])
    common.heading(f"prompt {prompt!r} ({len(ids)} tokens), greedy")
    print(common.table(["new tokens", "KV cache", "MiB written to cache", "seconds", "tok/s", "same tokens"], rows))

    used = len(ids) + lengths[-1] - 1
    print(f"\nthe pre-allocated cache reserved {max_len:,} positions ({static.bytes_reserved / 2**20:.1f} MiB) "
          f"for a sequence that used {used:,} ({100 * (1 - used / max_len):.0f}% of the reservation idle; "
          f"lesson 06 pages it)")

    common.heading("the cache update alone: one layer, one decode step, Qwen3-0.6B's KV shape (8 x 128, fp32)")
    rows = []
    for cached in ([1024] if args.quick else [1024, 4096, 16384]):
        k_old = torch.randn(cached, 8, 128, device=args.device)
        k_new = torch.randn(1, 8, 128, device=args.device)
        k_static = torch.zeros(cached + 1, 8, 128, device=args.device)
        pos = torch.tensor([cached], device=args.device)
        grow = time_per_call(args.device, torch.cat, [k_old, k_new])
        write = time_per_call(args.device, k_static.index_put_, (pos,), k_new)
        rows.append([cached, 1e6 * grow, 1e6 * write, grow / write])
    print(common.table(["tokens cached", "torch.cat (us)", "write at position (us)", "ratio"], rows))
    print("torch.cat copies every cached token to make room for one; the write touches one token's row")

    common.heading("RMSNorm with the residual add: torch ops and memory traffic per call (64 rows)")
    hidden = model.config.hidden_size
    x = torch.randn(64, hidden, device=args.device)
    res = torch.randn(64, hidden, device=args.device)
    w = model.model.norm.weight
    ops, traffic = ops_and_bytes(unfused_add_rms_norm, x, res, w, 1e-6)
    _, n_ref = common.count_kernels(fused_add_rms_norm_ref, x, res, w, 1e-6)
    need = (4 * x.numel() + w.numel()) * x.element_size()        # read x, residual, weight; write out, sum
    print(common.table(["implementation", "kernels", "KiB through memory"], [
        ["x + residual, then rms_norm_ref (torch ops)", ops, traffic / 1024],
        ["fused_add_rms_norm_ref (CPU path, same torch ops)", n_ref, traffic / 1024],
        ["fused_add_rms_norm (Triton, GPU path)", 1, need / 1024]]))
    print(f"each torch op reads its inputs and writes its output: {traffic / need:.1f}x the bytes one fused pass "
          f"moves (on a CPU both rows above run the same ops; a GPU runs the one kernel)")
    if args.device == "cuda":                  # time both on a prefill-sized batch of Qwen3-0.6B rows
        xs = torch.randn(8192, 1024, device="cuda", dtype=torch.bfloat16)
        rs, ws = torch.randn_like(xs), torch.ones(1024, device="cuda", dtype=torch.bfloat16)
        for name, fn in (("unfused torch", unfused_add_rms_norm), ("fused Triton", fused_add_rms_norm)):
            fn(xs, rs, ws, 1e-6)
            with common.Timer("cuda") as t:
                for _ in range(100):
                    fn(xs, rs, ws, 1e-6)
            us = 1e6 * t.seconds / 100
            gbs = 4 * xs.numel() * xs.element_size() / (us / 1e6) / 1e9
            print(f"8192 x 1024 bf16, {name:>13}: {us:7.1f} us per call "
                  f"(= {gbs:,.0f} GB/s of the 2 reads + 2 writes the data needs)")


def time_per_call(device: str, fn, *fn_args, repeat: int = 10, rounds: int = 5) -> float:
    """Seconds per call of fn(*fn_args): the best of `rounds` rounds (a busy machine only adds time)."""
    fn(*fn_args)
    best = float("inf")
    for _ in range(rounds):
        with common.Timer(device) as t:
            for _ in range(repeat):
                fn(*fn_args)
        best = min(best, t.seconds / repeat)
    return best


def ops_and_bytes(fn, *args):
    """(torch ops that launch a kernel, bytes those ops read and write) for one call of fn."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def nbytes(values) -> int:
        return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))

    class Count(TorchDispatchMode):
        ops = traffic = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view and not func.overloadpacket.__name__.startswith("empty"):
                Count.ops += 1
                Count.traffic += nbytes(args) + nbytes(out if isinstance(out, (tuple, list)) else [out])
            return out

    with Count():
        fn(*args)
    return Count.ops, Count.traffic


def unfused_add_rms_norm(x, residual, weight, eps):
    from aios.kernels import rms_norm_ref
    s = x + residual
    return rms_norm_ref(s, weight, eps), s


if __name__ == "__main__":
    main()
