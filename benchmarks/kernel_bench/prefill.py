"""Prefill attention (paged, causal) against torch SDPA and the varlen kernels: ms and TFLOP/s
(bench_kernels.py's --only prefill, --prefill-cases / --prefill-heads / --prefill-block-sizes, --sweep prefill).
"""

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from aios.kernels import (
    prefill_attention_ref,
)
from aios.kernels.prefill_attention import _prefill_attention_launch, _prefill_config
from aios.kernels.prefill_attention_tma import (
    TMA_TILES,
    _prefill_attention_tma_launch,
    check_prefill_attention_tma,
)
from benchmarks.kernel_bench.timing import bench_eager, max_err, paged_cache

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
