"""How the kernel benchmarks time a call (eagerly, or replayed in a CUDA graph over copies of
its inputs larger than L2) and the helpers every part shares.
"""

import torch
import triton

from aios.utils.graph_timing import L2_FLUSH_BYTES, bench_graph, copies_for  # noqa: F401  (shared)

HBM_BYTES_PER_S = 3.0e12  # H100 SXM HBM3, the floor the brief names (spec 3.35 TB/s)


def bench_eager(fn, rep_ms=200):
    return triton.testing.do_bench(fn, warmup=25, rep=rep_ms)  # ms, L2 flushed between calls


def with_best_of_sweep(rows: list[dict]) -> list[dict]:
    """The rows that are not sweep points, then the fastest sweep point (if any) as "best of sweep"."""
    shown = [r for r in rows if not r["impl"].startswith("sweep")]
    swept = [r for r in rows if r["impl"].startswith("sweep")]
    if swept:
        best = min(swept, key=lambda r: r["us"])
        shown.append(dict(best, impl="best of sweep " + best["impl"][6:]))
    return shown


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
