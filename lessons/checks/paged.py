"""A paged attention step for the lesson checks (lessons 09 and 11): random q, and a K/V cache whose
blocks are scattered through the pool, as the block manager hands them out."""

import torch


def paged_case(seqlens_q, seqlens_k, block_size, heads=4, kv_heads=2, head_dim=16, seed=0):
    """Random q and a paged cache whose blocks are scattered through the pool."""
    g = torch.Generator().manual_seed(seed)
    blocks = [(k + block_size - 1) // block_size for k in seqlens_k]
    pool = sum(blocks) + 3
    k_cache = torch.randn(pool, block_size, kv_heads, head_dim, generator=g)
    v_cache = torch.randn(pool, block_size, kv_heads, head_dim, generator=g)
    perm = torch.randperm(pool, generator=g).tolist()
    block_tables = torch.full((len(blocks), max(blocks)), -1, dtype=torch.int32)
    used = 0
    for s, nb in enumerate(blocks):
        block_tables[s, :nb] = torch.tensor(perm[used: used + nb])
        used += nb
    cu_q = torch.tensor([0] + seqlens_q).cumsum(0).to(torch.int32)
    cu_k = torch.tensor([0] + seqlens_k).cumsum(0).to(torch.int32)
    q = torch.randn(int(cu_q[-1]), heads, head_dim, generator=g)
    return (q, k_cache, v_cache, cu_q, cu_k, max(seqlens_q), max(seqlens_k), block_tables, head_dim ** -0.5)
