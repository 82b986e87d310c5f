"""Every Triton kernel in aios/kernels compiles for the H200 (sm_90), checked on a machine without a GPU.

The CPU suite runs the kernels in Triton's interpreter, which executes their Python bodies with
numpy and never compiles them: a kernel the GPU compiler rejects (a name re-bound inside a loop to
a tensor of another shape, a dot of dtypes Hopper does not take, a wrong inline-PTX instruction)
passes every CPU test. That happened: moe_align's layout kernels passed the CPU suite and failed
18 GPU tests. Triton's compiler itself needs no GPU, so this file, run as a script in a subprocess
without TRITON_INTERPRET, lets tests/sm90_compile.py turn every `kernel[grid](...)` into a
`triton.compile` for sm_90 down to the cubin (ptxas included: it is what checks the PDL
instructions' inline PTX), then calls every public wrapper of aios/kernels (`_cases`) with CPU
tensors shaped like Qwen3-0.6B's and Qwen3-30B-A3B's layers, choosing tiles, PDL and the other
device-dependent constexprs as on the H200, and every entry of the measured MoE tile tables
(aios/kernels/configs/fused_moe/). Nothing runs: only compilation is checked.

The tests: every case launches; every launch compiles (and fits the H200's shared memory); every
tile of the benchmark's prefill sweep compiles, or fails only for want of shared memory; every tile
of prefill_attention_tma's TMA_TILES compiles, its warp-specialized ones into 3 warp groups (those
of 128 rows excepted on triton 3.9, whose Hopper warp-specialization pass fails them); every
kernel of aios/kernels (a module-level JITFunction launched somewhere, or called by no other
kernel) was compiled at least once, so a new kernel without a case fails here; every device choice
in aios/kernels is one the harness makes as the GPU would; and the bug that broke the GPU tests
(`_loop_carried_shape_change` below) is caught. What only a GPU checks: numerics, races, PDL
ordering, registers and occupancy, loading and running the cubin (aios/kernels/NOTES.md).

Cost on a 2-core CPU with a cold Triton cache: 83 s (153 s before the compiles ran on a thread per
core, sm90_compile.Sm90Compiler), for the cases' 152 specializations of 24 kernels (the opt-in TMA
kernels' included), the 28 of bench_kernels.py's prefill sweep (reported apart as `prefill_sweep`)
and prefill_attention_tma's TMA tiles (`tma_tiles`); a few seconds when ~/.triton/cache already
holds them (an edited kernel recompiles only its own). Another Triton's
compiler: put it first on PYTHONPATH. By hand:
`PYTHONPATH=$PWD python tests/test_triton_compiles_for_hopper.py` prints the report (JSON).
"""

from __future__ import annotations

import ast
import importlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from sm90_compile import CONFIG_FUNCTIONS, GPU_CONSTEXPRS

REPO = Path(__file__).resolve().parents[1]


@triton.jit
def _loop_carried_shape_change(p, n, BLOCK: tl.constexpr):
    # moe_align.py's bug: the interpreter runs it, the compiler refuses a loop-carried name whose shape changes
    rows = tl.arange(0, 16)[:, None] + tl.arange(0, 16)[None, :]
    tl.store(p + rows, rows)
    for start in range(0, n, BLOCK):
        rows = start + tl.arange(0, BLOCK)
        tl.store(p + rows, rows)


def _cases():
    """(name, call) pairs that launch every kernel variant the GPU path runs (Qwen3-0.6B's and
    Qwen3-30B-A3B's shapes; fp32 and fp16 where a kernel's tl.dot precision or tiles depend on it)."""
    import aios.kernels as K
    P = importlib.import_module("aios.kernels.prefill_attention")   # the package's name is the function
    QT = importlib.import_module("aios.kernels.q_tiles")
    T = importlib.import_module("aios.kernels.prefill_attention_tma")
    SG = importlib.import_module("aios.kernels.skinny_gemm")
    from aios.kernels.fused_moe import fused_moe
    from aios.kernels.fused_moe_tma import fused_moe_tma
    from aios.kernels.moe_align import moe_align_block_size
    from aios.kernels.moe_tiles import CONFIG_DIR, MoeTiles
    from aios.kernels.topk_softmax import topk_softmax

    bf16, f16, f32 = torch.bfloat16, torch.float16, torch.float32
    e = torch.empty
    hidden, heads, kv_heads, head_dim, inter = 1024, 16, 8, 128, 3072

    def linear(dtype, n, k, odd=False):
        n, k = (n - 3, k - 8) if odd else (n, k)             # sizes not divisible by 16: another specialization
        two_i = n - n % 2                                     # gate_up: [gate; up], two equal halves
        return lambda: (K.gemv(e(1, k, dtype=dtype), e(n, k, dtype=dtype)),
                        K.gemv_silu_and_mul(e(1, k, dtype=dtype), e(two_i, k, dtype=dtype)),
                        K.gemv_silu_and_mul(e(1, k, dtype=dtype), e(two_i, k, dtype=dtype), e(two_i, dtype=dtype)),
                        K.add_rmsnorm_gemv(e(1, k, dtype=dtype), e(1, k, dtype=dtype), e(k, dtype=dtype), 1e-6,
                                           e(n, k, dtype=dtype)),
                        K.add_rmsnorm_gemv(e(1, k, dtype=dtype), None, e(k, dtype=dtype), 1e-6, e(n, k, dtype=dtype)),
                        K.silu_mul_gemv(e(1, 2 * k, dtype=dtype), e(n, k, dtype=dtype)))

    def norms(dtype, rows):
        x, w = e(rows, hidden, dtype=dtype), e(hidden, dtype=dtype)
        return lambda: (K.rms_norm(x, w, 1e-6), K.fused_add_rms_norm(x, x, w, 1e-6), K.gemma_rms_norm(x, w, 1e-6),
                        K.fused_add_gemma_rms_norm(x, x, w, 1e-6), K.rms_norm(x, w.float(), 1e-6),
                        K.silu_and_mul(e(rows, 2 * inter, dtype=dtype)),
                        K.gelu_tanh_and_mul(e(rows, 2 * inter, dtype=dtype)))

    def qkv_and_cache(dtype, tokens, block_size, dim=head_dim):
        qkv = e(tokens, (heads + 2 * kv_heads) * dim, dtype=dtype)
        q = qkv[:, :heads * dim].view(tokens, heads, dim)
        k = qkv[:, heads * dim:(heads + kv_heads) * dim].view(tokens, kv_heads, dim)
        v = qkv[:, (heads + kv_heads) * dim:].view(tokens, kv_heads, dim)
        k_cache, v_cache = e(64, block_size, kv_heads, dim, dtype=dtype), e(64, block_size, kv_heads, dim, dtype=dtype)
        return q, k, v, k_cache, v_cache

    def rope_and_store(dtype):
        q, k, v, k_cache, v_cache = qkv_and_cache(dtype, 8, 16)
        w, pos, cos_sin = e(head_dim, dtype=dtype), torch.zeros(8, dtype=torch.long), e(4096, head_dim)
        slots = torch.arange(8, dtype=torch.int32)
        return lambda: (K.qk_norm_rope(q, k, w, w, pos, cos_sin, 1e-6),
                        K.qk_norm_rope_store_kvcache(q, k, v, w, w, pos, cos_sin, 1e-6, k_cache, v_cache, slots),
                        K.rope_store_kvcache(q, k, v, pos, cos_sin, k_cache, v_cache, slots),
                        K.store_kvcache(k, v, k_cache, v_cache, slots))

    def prefill(dtype, block_size, max_seqlen_q, window=None, dim=head_dim):
        q, _, _, k_cache, v_cache = qkv_and_cache(dtype, 2 * max_seqlen_q, block_size, dim)
        cu = torch.tensor([0, max_seqlen_q, 2 * max_seqlen_q], dtype=torch.int32)
        tables = torch.zeros(2, 4096 // block_size, dtype=torch.int32)
        return lambda: K.prefill_attention(q, k_cache, v_cache, cu, cu, max_seqlen_q, max_seqlen_q, tables,
                                           dim ** -0.5, sliding_window=window)

    def prefill_tma(dtype, max_seqlen_q, num_heads=heads, window=None, dim=head_dim):
        # the opt-in Hopper variant (prefill_attention_tma.py) at its wrapper's tile; q a view of a fused qkv
        q, _, _, k_cache, v_cache = qkv_and_cache(dtype, 2 * max_seqlen_q, 256, dim)
        if num_heads != heads:
            q = e(2 * max_seqlen_q, num_heads, dim, dtype=dtype)
        cu = torch.tensor([0, max_seqlen_q, 2 * max_seqlen_q], dtype=torch.int32)
        tables = torch.zeros(2, 16, dtype=torch.int32)
        return lambda: T.prefill_attention_tma(q, k_cache, v_cache, cu, cu, max_seqlen_q, max_seqlen_q, tables,
                                               dim ** -0.5, sliding_window=window)

    def prefill_packed(dtype, block_size, max_seqlen_q, num_heads=heads, window=None, tiles=None):
        # GQA packing (_prefill_config(pack_gqa=True), or a sweep tile of bench_kernels.py): the wrapper
        # launches it once the default flips
        q = e(2 * max_seqlen_q, num_heads, head_dim, dtype=dtype)
        k_cache, v_cache = e(64, block_size, kv_heads, head_dim, dtype=dtype), e(64, block_size, kv_heads, head_dim,
                                                                                  dtype=dtype)
        cu = torch.tensor([0, max_seqlen_q, 2 * max_seqlen_q], dtype=torch.int32)
        tables = torch.zeros(2, 4096 // block_size, dtype=torch.int32)

        def launch():
            cfg = P._prefill_config(head_dim, dtype, torch.device("cpu"), max_seqlen_q, group=num_heads // kv_heads,
                                    pack_gqa=True)
            if tiles is not None:
                cfg.update(zip(("block_m", "block_n", "num_warps", "num_stages", "pack_gqa"), tiles))
            return P._prefill_attention_launch(q, k_cache, v_cache, cu, cu, max_seqlen_q, tables, head_dim ** -0.5,
                                               **cfg, sliding_window=window)
        return launch

    def prefill_tiled(dtype, max_seqlen_q, pack_gqa=False, window=None):
        # the static q-tile schedule (TILED: grid (heads, num_tiles), as a CUDA graph of a mixed step
        # captures it): a chunk of max_seqlen_q and 4 decode rows, the table padded with (-1, 0) rows
        seqlens_q = [max_seqlen_q, 1, 1, 1, 1]
        q, _, _, k_cache, v_cache = qkv_and_cache(dtype, sum(seqlens_q), 256)
        cu = torch.tensor([0] + list(itertools.accumulate(seqlens_q)), dtype=torch.int32)
        tables = torch.zeros(len(seqlens_q), 16, dtype=torch.int32)

        def launch():
            group = heads // kv_heads
            tile_rows = QT.prefill_tile_rows(head_dim, dtype, torch.device("cpu"), max_seqlen_q, group,
                                            pack_gqa=pack_gqa)
            num_tiles = QT.max_q_tiles(sum(seqlens_q), len(seqlens_q), tile_rows) + 2
            q_tiles = torch.from_numpy(QT.prefill_q_tiles(torch.diff(cu).numpy(), torch.diff(cu).numpy(),
                                                         tile_rows, num_tiles))
            if not pack_gqa:
                return K.prefill_attention(q, k_cache, v_cache, cu, cu, max_seqlen_q, max_seqlen_q, tables,
                                           head_dim ** -0.5, sliding_window=window, q_tiles=q_tiles)
            cfg = P._prefill_config(head_dim, dtype, torch.device("cpu"), max_seqlen_q, group=group, pack_gqa=True)
            return P._prefill_attention_launch(q, k_cache, v_cache, cu, cu, max_seqlen_q, tables, head_dim ** -0.5,
                                               **cfg, sliding_window=window, q_tiles=q_tiles)
        return launch

    def decode(dtype, block_size, batch, window=None, dim=head_dim):
        q, _, _, k_cache, v_cache = qkv_and_cache(dtype, batch, block_size, dim)
        tables = torch.zeros(batch, 4096 // block_size, dtype=torch.int32)
        lens = torch.ones(batch, dtype=torch.int32)
        return lambda: K.decode_attention(q, k_cache, v_cache, tables, lens, dim ** -0.5, sliding_window=window)

    def sampling():
        logits = e(4, 151936)
        rows, bitmask = torch.tensor([0, 2], dtype=torch.int32), e(2, 4748, dtype=torch.int32)
        return lambda: (K.sample(logits, e(4), e(4, dtype=torch.long)),
                        K.apply_token_bitmask(logits, bitmask, rows),
                        K.apply_token_bitmask(logits, bitmask, rows.long()))

    def router(dtype, tokens, renormalize=True):
        return lambda: topk_softmax(e(tokens, 128, dtype=dtype), 8, renormalize)

    def moe(dtype, tokens, experts=128, top_k=8, moe_hidden=256, moe_inter=128, tiles=None):
        # hidden and intermediate are runtime sizes of the kernels: small ones keep the CPU tensors small
        x = e(tokens, moe_hidden, dtype=dtype)
        w13, w2 = e(experts, 2 * moe_inter, moe_hidden, dtype=dtype), e(experts, moe_hidden, moe_inter, dtype=dtype)
        ids = torch.randint(0, experts, (tokens, top_k), dtype=torch.int32)     # the layout reads them on the CPU
        return lambda: fused_moe(x, w13, w2, e(tokens, top_k), ids, tiles=tiles)

    def moe_tma(dtype, tokens, tiles=None, programs_per_sm=1, experts=128, top_k=8, moe_hidden=256, moe_inter=128):
        # the opt-in TMA grouped GEMM (aios/kernels/fused_moe_tma.py): persistent (1 program per SM) or not (None)
        x = e(tokens, moe_hidden, dtype=dtype)
        w13, w2 = e(experts, 2 * moe_inter, moe_hidden, dtype=dtype), e(experts, moe_hidden, moe_inter, dtype=dtype)
        ids = torch.randint(0, experts, (tokens, top_k), dtype=torch.int32)
        return lambda: fused_moe_tma(x, w13, w2, e(tokens, top_k), ids, tiles=tiles, programs_per_sm=programs_per_sm)

    measured_moe_tiles = [  # every entry of every committed tile table (benchmarks/tune_moe.py), as the only entry
        (f"moe bf16, {path.stem}, entry {num_tokens}", moe(bf16, 64, tiles=MoeTiles(((1, tiles),))))
        for path in sorted(CONFIG_DIR.glob("*.json"))
        for num_tokens, tiles in MoeTiles.from_dict(json.loads(path.read_text())).by_num_tokens]
    measured_moe_tiles_tma = [  # the same entries through the TMA grouped GEMM, both grids
        (f"moe tma bf16, {path.stem}, entry {num_tokens}, programs_per_sm {grid}",
         moe_tma(bf16, 64, tiles=MoeTiles(((1, tiles),)), programs_per_sm=grid))
        for path in sorted(CONFIG_DIR.glob("*.json"))
        for num_tokens, tiles in MoeTiles.from_dict(json.loads(path.read_text())).by_num_tokens for grid in (None, 1)]
    return measured_moe_tiles + measured_moe_tiles_tma + [
        ("gemv, fused gemvs bf16 (0.6B qkv)", linear(bf16, 4096, hidden)),
        ("gemv, fused gemvs bf16 (8B gate_up)", linear(bf16, 24576, 4096)),
        ("gemv, fused gemvs bf16, sizes not divisible by 16", linear(bf16, 4096, hidden, odd=True)),
        ("gemv, fused gemvs fp32", linear(f32, 4096, hidden)),
        ("skinny gemm bf16 (opt-in), 2 / 32 / 64 rows of the 8B qkv",
         lambda: [SG.skinny_gemm(e(m, 4096, dtype=bf16), e(6144, 4096, dtype=bf16)) for m in (2, 32, 64)]),
        ("skinny gemm bf16 (opt-in), 100 / 182 / 256 rows of the 8B down_proj (wide tiles of x)",
         lambda: [SG.skinny_gemm(e(m, 12288, dtype=bf16), e(4096, 12288, dtype=bf16)) for m in (100, 182, 256)]),
        ("skinny gemm tma bf16 (opt-in), 2 / 32 / 182 / 256 rows of the 8B down_proj",
         lambda: [SG.skinny_gemm(e(m, 12288, dtype=bf16), e(4096, 12288, dtype=bf16), tma=True)
                  for m in (2, 32, 182, 256)]),
        ("skinny gemm fp32 (opt-in), 8 rows",
         lambda: SG.skinny_gemm(e(8, hidden, dtype=f32), e(4096, hidden, dtype=f32))),
        ("rmsnorm, activations bf16", norms(bf16, 8)),
        ("rmsnorm, activations fp32", norms(f32, 8)),
        ("qk_norm_rope, store_kvcache bf16", rope_and_store(bf16)),
        ("qk_norm_rope, store_kvcache fp32", rope_and_store(f32)),
        ("prefill bf16, block 16 (token gather), 1024 tokens", prefill(bf16, 16, 1024)),
        ("prefill bf16, block 256 (tile in block), 1024 tokens", prefill(bf16, 256, 1024)),
        ("prefill bf16, block 256, 16-token chunk", prefill(bf16, 256, 16)),
        ("prefill bf16, block 256, 4096 tokens (Hopper's large tiles)", prefill(bf16, 256, 4096)),
        ("prefill bf16, sliding window", prefill(bf16, 256, 1024, window=512)),
        ("prefill bf16, head_dim 256", prefill(bf16, 256, 1024, dim=256)),
        ("prefill fp16, head_dim 64", prefill(f16, 16, 1024, dim=64)),
        ("prefill fp32", prefill(f32, 16, 1024)),
        ("prefill bf16 packed GQA 2, block 256, 1024 tokens", prefill_packed(bf16, 256, 1024)),
        ("prefill bf16 packed GQA 2, block 16 (token gather)", prefill_packed(bf16, 16, 1024)),
        ("prefill bf16 packed GQA 2, 16-token chunk", prefill_packed(bf16, 256, 16)),
        ("prefill bf16 packed GQA 4 (8B), sliding window", prefill_packed(bf16, 256, 1024, num_heads=32, window=512)),
        ("prefill bf16 packed GQA 4 (8B), 1-token chunk", prefill_packed(bf16, 256, 1, num_heads=32)),
        ("prefill fp32 packed GQA 2", prefill_packed(f32, 16, 1024)),
        ("prefill bf16, q-tile schedule, 256-token chunk + decode rows", prefill_tiled(bf16, 256)),
        ("prefill bf16, q-tile schedule, sliding window", prefill_tiled(bf16, 256, window=512)),
        ("prefill bf16 packed GQA 2, q-tile schedule", prefill_tiled(bf16, 256, pack_gqa=True)),
        ("prefill tma bf16, block 256, 4096 tokens", prefill_tma(bf16, 4096)),
        ("prefill tma bf16, 32/8 heads, sliding window", prefill_tma(bf16, 1024, num_heads=32, window=512)),
        ("prefill tma fp16, head_dim 64, 16-token chunk", prefill_tma(f16, 16, dim=64)),
        ("decode bf16, batch 1 (split + reduce), block 16", decode(bf16, 16, 1)),
        ("decode bf16, batch 256 (direct), block 256", decode(bf16, 256, 256)),
        ("decode bf16, sliding window, split", decode(bf16, 256, 1, window=512)),
        ("decode bf16, head_dim 256", decode(bf16, 256, 1, dim=256)),
        ("decode fp16, head_dim 64", decode(f16, 16, 1, dim=64)),
        ("decode fp32", decode(f32, 16, 1)),
        ("sampling, token bitmask", sampling()),
        ("router bf16, 1 token", router(bf16, 1)),
        ("router bf16, 4 tokens", router(bf16, 4)),
        ("router bf16, 64 tokens", router(bf16, 64)),
        ("router bf16, 64 tokens, not renormalized", router(bf16, 64, renormalize=False)),
        ("moe bf16, 1 token (two gemvs)", moe(bf16, 1)),
        ("moe bf16, 4 tokens (one-program layout, SiLU in the GEMM)", moe(bf16, 4)),
        ("moe bf16, 64 tokens (chunked layout, SiLU in the GEMM)", moe(bf16, 64)),
        ("moe bf16, 300 tokens (chunked layout, SiLU launch)", moe(bf16, 300)),
        ("moe fp32, 64 tokens", moe(f32, 64)),
        ("moe tma bf16, 300 tokens (the rule's tiles, SiLU launch)", moe_tma(bf16, 300)),
        ("moe tma fp32, 64 tokens", moe_tma(f32, 64)),
        ("moe align, int64 topk_ids (select_experts)", lambda: (
            moe_align_block_size(torch.randint(0, 128, (4, 8)), 16, 128),
            moe_align_block_size(torch.randint(0, 128, (64, 8)), 32, 128))),
    ]


def _prefill_sweep_cases():
    """bench_kernels.py's PREFILL_SWEEP at block size 256, bf16: unpacked (0.6B, 16/8 heads) and
    packed (8B, 32/8). Not launched by the wrappers: reported apart, since a tile over the H200's
    shared memory is a result of the sweep (it fails there at launch), not a bug."""
    from benchmarks.kernel_bench.prefill import PREFILL_SWEEP

    P = importlib.import_module("aios.kernels.prefill_attention")   # the package's name is the function

    e, cases = torch.empty, []
    for tiles in PREFILL_SWEEP:
        for num_heads, pack_gqa in ((16, False), (32, True)):
            q = e(2048, num_heads, 128, dtype=torch.bfloat16)
            k_cache = e(64, 256, 8, 128, dtype=torch.bfloat16)
            cu, tables = torch.tensor([0, 1024, 2048], dtype=torch.int32), torch.zeros(2, 16, dtype=torch.int32)
            cfg = dict(zip(("block_m", "block_n", "num_warps", "num_stages"), tiles), pack_gqa=pack_gqa)
            cases.append((f"sweep {tiles}{' packed' if pack_gqa else ''}",
                          lambda q=q, k_cache=k_cache, cu=cu, tables=tables, cfg=cfg: P._prefill_attention_launch(
                              q, k_cache, k_cache, cu, cu, 1024, tables, 128 ** -0.5, **cfg)))
    return cases


def _tma_tile_cases():
    """prefill_attention_tma's TMA_TILES (bench_kernels.py times each) and WS_TILES at block size 256, bf16:
    Qwen3-0.6B's 16/8 heads, and the 8B's 32/8 with a sliding window. Reported apart: a
    warp-specialized tile of 128 rows fails Triton 3.9's Hopper warp-specialization pass."""
    T = importlib.import_module("aios.kernels.prefill_attention_tma")

    e, cases = torch.empty, []
    for tiles in T.TMA_TILES + T.WS_TILES:
        for num_heads, window in ((16, None), (32, 512)):
            q = e(2048, num_heads, 128, dtype=torch.bfloat16)
            k_cache = e(64, 256, 8, 128, dtype=torch.bfloat16)
            cu, tables = torch.tensor([0, 1024, 2048], dtype=torch.int32), torch.zeros(2, 16, dtype=torch.int32)
            cases.append((tiles, f"tma {tiles} h{num_heads}/8" + (" window" if window else ""),
                          lambda q=q, k_cache=k_cache, cu=cu, tables=tables, tiles=tiles, window=window:
                          T._prefill_attention_tma_launch(q, k_cache, k_cache, cu, cu, 1024, tables, 128 ** -0.5,
                                                          *tiles, sliding_window=window,
                                                          allow_warp_specialize=True)))
    return cases


def compile_every_launch() -> dict:
    """The report: {"launches": [one record per compiled specialization], "case_errors": [...],
    "kernels": {name: is_kernel}, "canary": the record of _loop_carried_shape_change}."""
    import traceback

    from sm90_compile import Sm90Compiler, as_on_the_h200, compile_instead_of_launching, kernel_functions

    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "the interpreter compiles nothing: run without it"
    torch.set_num_threads(1)
    compiler = Sm90Compiler()
    as_on_the_h200()
    compile_instead_of_launching(compiler)
    case_errors = []
    for name, call in _cases():
        compiler.case = name
        try:
            call()
        except Exception:                               # noqa: BLE001  (a case that cannot launch is reported)
            case_errors.append(f"{name}: {traceback.format_exc(limit=-3)}")
    num_launches = len(compiler.records)
    for name, call in _prefill_sweep_cases():
        compiler.case = name
        try:
            call()
        except Exception:                               # noqa: BLE001
            case_errors.append(f"{name}: {traceback.format_exc(limit=-3)}")
    sweep = compiler.records[num_launches:]
    del compiler.records[num_launches:]
    tma_tiles = []
    for tiles, name, call in _tma_tile_cases():
        compiler.case = name
        try:
            call()
        except Exception:                               # noqa: BLE001
            case_errors.append(f"{name}: {traceback.format_exc(limit=-3)}")
        tma_tiles += [(tiles, record) for record in compiler.records[num_launches:]]
        del compiler.records[num_launches:]
    compiler.case = "canary"
    canary = compiler.compile(_loop_carried_shape_change, (torch.empty(4096, dtype=torch.int32), 100), {"BLOCK": 64})
    compiler.records.remove(canary)
    compiler.wait()                                     # every record filled in
    tma_tiles = [dict(record, tiles=list(tiles)) for tiles, record in tma_tiles]
    return {"launches": compiler.records, "case_errors": case_errors, "kernels": kernel_functions(), "canary": canary,
            "prefill_sweep": sweep, "tma_tiles": tma_tiles, "triton": triton.__version__}


@pytest.fixture(scope="module")
def report() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    proc = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_case_launches_its_kernels(report):
    assert not report["case_errors"], "\n".join(report["case_errors"])


@pytest.mark.slow
def test_every_launched_kernel_compiles_for_sm90_down_to_a_cubin(report):
    failed = [f"{r['kernel']} {r['constexprs']} (case: {r['case']}):\n{r['error']}"
              for r in report["launches"] if not r["ok"]]
    assert not failed, "\n\n".join(failed)
    assert all("cubin" in r["stages"] for r in report["launches"])


@pytest.mark.slow
def test_every_kernel_in_aios_kernels_is_compiled_at_least_once(report):
    kernels = {name for name, is_kernel in report["kernels"].items() if is_kernel}
    helpers = set(report["kernels"]) - kernels
    assert "aios.kernels.moe_align._moe_scan_kernel" in kernels
    assert "aios.kernels.pdl.wait_for_previous_kernel" in helpers
    missing = kernels - {r["kernel"] for r in report["launches"]}
    assert not missing, f"no case launches {sorted(missing)}: add one to _cases()"


@pytest.mark.slow
def test_every_prefill_sweep_tile_compiles_for_sm90_or_only_overflows_shared_memory(report):
    """bench_kernels.py --sweep prefill: each tile compiles to a cubin; one that needs more shared
    memory than a block of the H200 gets fails at launch there (printed; kernels/NOTES.md lists them)."""
    sweep = report["prefill_sweep"]
    assert len(sweep) >= 20
    for r in sweep:
        print(f"{r['case']:36s} " + (f"{r['shared']:7d} B shared" if r["ok"] else r["error"][:100]))
    broken = [f"{r['case']}: {r['error']}" for r in sweep if not r["ok"] and "shared memory" not in r["error"]]
    assert not broken, "\n\n".join(broken)


@pytest.mark.slow
def test_every_tma_tile_compiles_for_sm90_and_its_warp_specialized_ones_run_three_warp_groups(report):
    """prefill_attention_tma's TMA_TILES and WS_TILES: each compiles to a cubin within the H200's shared memory,
    and a warp-specialized one is split into 3 warp groups (a TMA producer, two consumers). Known
    exception, printed: Triton 3.9's Hopper warp-specialization pass fails the tiles of 128 rows
    (3.6, the H200's Triton, compiles them: kernels/NOTES.md, "Hopper TMA variant")."""
    from aios.kernels.prefill_attention_tma import WS_TILES

    tma = report["tma_tiles"]    # less the specializations _cases() compiled first (the wrapper's tile)
    assert {tuple(r["tiles"]) for r in tma} >= set(WS_TILES)
    broken, specialized = [], 0
    for r in tma:
        block_m, _, num_warps, _, warp_specialize = r["tiles"]
        print(f"{r['case']:44s} " + (f"{r['shared']:7d} B shared, {r['warps']:2d} warps" if r["ok"]
                                     else r["error"][:100]))
        if r["ok"]:
            assert r["warps"] == (3 * num_warps if warp_specialize else num_warps), r
            specialized += warp_specialize
        elif not (warp_specialize and block_m == 128 and report["triton"].startswith("3.9")):
            broken.append(f"{r['case']}: {r['error']}")
    assert not broken, "\n\n".join(broken)
    assert specialized, "no warp-specialized tile compiled"


@pytest.mark.slow
def test_the_gpu_constexprs_name_real_parameters(report):
    """GPU_CONSTEXPRS is applied by name: a renamed parameter would compile the interpreter's variant."""
    for name, value in GPU_CONSTEXPRS.items():
        assert any(f"'{name}': {value}" in r["constexprs"] for r in report["launches"]), name


@pytest.mark.slow
def test_a_loop_carried_shape_change_fails_to_compile(report):
    """The harness can fail: the bug that passed the interpreter and broke 18 GPU tests is caught."""
    canary = report["canary"]
    assert not canary["ok"] and "Loop-carried variable rows" in canary["error"], canary


def test_every_device_choice_in_aios_kernels_is_made_as_on_the_gpu_by_the_harness():
    """A wrapper choosing by `device.type` (or calling sm_count) anywhere else than in CONFIG_FUNCTIONS,
    or than in a keyword argument named in GPU_CONSTEXPRS, would compile its interpreter variant here
    unnoticed. (`is_cuda` is answered True everywhere; sm_count, is_hopper and pdl_enabled are the
    choices themselves, answered as on the H200.)"""
    allowed = set(CONFIG_FUNCTIONS) | {("aios.kernels.device", "sm_count"), ("aios.kernels.device", "is_hopper"),
                                       ("aios.kernels.pdl", "pdl_enabled")}
    unhandled = []
    for path in sorted((REPO / "aios" / "kernels").glob("*.py")):
        module = f"aios.kernels.{path.stem}"
        for function in ast.parse(path.read_text()).body:
            if not isinstance(function, ast.FunctionDef) or (module, function.name) in allowed:
                continue
            in_gpu_constexpr = {id(k.value) for node in ast.walk(function) if isinstance(node, ast.Call)
                                for k in node.keywords if k.arg in GPU_CONSTEXPRS}
            for node in ast.walk(function):
                device_type = (isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute)
                               and node.left.attr == "type"
                               and any(isinstance(c, ast.Constant) and c.value == "cuda" for c in node.comparators))
                sm_count = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "sm_count"
                if (device_type and id(node) not in in_gpu_constexpr) or sm_count:
                    unhandled.append(f"{path.name}:{node.lineno} in {function.name}")
    assert not unhandled, f"device choices the harness does not make as the H200: {unhandled} (tests/sm90_compile.py)"


if __name__ == "__main__":
    print(json.dumps(compile_every_launch()))
