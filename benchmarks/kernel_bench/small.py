"""The small kernels (norms, SiLU * up, q/k-norm + RoPE with and without the K/V store, the K/V store,
the sampler) against their torch refs, in CUDA graphs (bench_kernels.py's --only small).
"""

import torch
import triton

from aios.kernels import (
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
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
from benchmarks.kernel_bench.timing import bench_graph, copies_for, max_err


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
