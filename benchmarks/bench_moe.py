"""Time one Qwen3-30B-A3B MoE layer on the GPU: the path before issue 19's launch cuts against now.

    python benchmarks/bench_moe.py [--tokens 1 2 4 8 32 256] [--sweep] [--out benchmarks/results]

One layer: 128 experts, top-8, hidden 2048, moe_intermediate 768, norm_topk_prob, bf16, random
router weights and inputs (random routing). Timed the way bench_kernels.py times kernels: inside a
CUDA graph of 64 calls, cycling through enough copies of the layer (its own experts, router and
input each; >= 256 MiB of expert weights read in all) that the weights come from HBM, not L2.

Rows, microseconds per layer call:
- `layer, before`: the gate, `select_experts` (torch ops) and `fused_moe(gemv=False,
  silu_in_gemm=False)`, the sorted layout, grouped GEMMs and a SiLU launch: the path before these
  changes, less its layout's fill launch (and with PDL on its kernels, as now);
- `layer, now`: the gate, the Triton `topk_softmax` and `fused_moe` as the engine calls it (the
  decode gemvs up to MAX_PAIRS_GEMV pairs, else the sorted grouped GEMMs at the GPU's measured tiles
  where benchmarks/tune_moe.py wrote a table, as the engine's FusedMoE layer loads it);
- `router`, `experts (sorted ...)` and `experts (gemv)` alone, to place the time, to choose
  MAX_PAIRS_GEMV (the gemv rows up to 8 tokens) and where the SiLU goes (fused_moe_config);
- with --sweep: moe_gemv tiles at 1 and 2 tokens, grouped-GEMM tiles at 32 and 256;
- with --tma (the sorted path's token counts): `experts (sorted, engine's tiles)` and the same
  tiles through aios/kernels/fused_moe_tma.py, a program per work item and persistent grids of 1
  and 2 programs per SM.
Every row first checks its output against fused_moe_ref in fp32. Writes moe-<date>-<gpu>.json and
.md under --out.
"""

import argparse
import datetime
import functools
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))     # this checkout's aios

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

from aios.kernels.fused_moe import fused_moe, fused_moe_config, fused_moe_ref  # noqa: E402
from aios.kernels.fused_moe_tma import fused_moe_tma  # noqa: E402
from aios.kernels.gemv import gemv  # noqa: E402
from aios.kernels.moe_gemv import MAX_PAIRS_GEMV, fused_moe_gemv  # noqa: E402
from aios.kernels.moe_tiles import MoeTiles  # noqa: E402
from aios.kernels.topk_softmax import topk_softmax  # noqa: E402
from aios.layers.fused_moe import select_experts  # noqa: E402
from benchmarks.kernel_bench.timing import bench_graph  # noqa: E402

E, TOP_K, H, INTER = 128, 8, 2048, 768
EXPERT_BYTES = 3 * H * INTER * 2                 # gate, up and down of one expert, bf16
MIN_BYTES_CYCLED = 256 << 20
TILES = MoeTiles.load(E, INTER, torch.cuda.get_device_name()) if torch.cuda.is_available() else None  # the engine's


def experts_hit(tokens: int) -> float:
    return E * (1 - (1 - TOP_K / E) ** tokens)


def make_layers(num_copies: int, tokens: int, gen: torch.Generator) -> list[dict]:
    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=gen) * scale).to(torch.bfloat16)
    return [dict(x=randn(tokens, H), gate=randn(E, H, scale=H ** -0.5),
                 w13=randn(E, 2 * INTER, H, scale=H ** -0.5), w2=randn(E, H, INTER, scale=INTER ** -0.5))
            for _ in range(num_copies)]


def router_logits(layer: dict) -> torch.Tensor:
    x = layer["x"]
    return gemv(x, layer["gate"]) if x.shape[0] == 1 else F.linear(x, layer["gate"])   # LinearBase's choice


def layer_before(layer: dict) -> torch.Tensor:
    weights, ids = select_experts(router_logits(layer), TOP_K, True)
    return fused_moe(layer["x"], layer["w13"], layer["w2"], weights, ids, gemv=False, silu_in_gemm=False)


def layer_now(layer: dict) -> torch.Tensor:
    weights, ids = topk_softmax(router_logits(layer), TOP_K, True)
    return fused_moe(layer["x"], layer["w13"], layer["w2"], weights, ids, tiles=TILES)


def reference(layer: dict) -> torch.Tensor:
    weights, ids = select_experts(router_logits(layer).float(), TOP_K, True)
    return fused_moe_ref(layer["x"].float(), layer["w13"].float(), layer["w2"].float(), weights, ids)


def time_rows(tokens: int, args, results: list) -> None:
    gen = torch.Generator(device="cuda").manual_seed(tokens)
    bytes_per_call = experts_hit(tokens) * EXPERT_BYTES
    num_copies = max(1, min(8, math.ceil(MIN_BYTES_CYCLED / bytes_per_call)))
    layers = make_layers(num_copies, tokens, gen)
    routed = [topk_softmax(router_logits(layer), TOP_K, True) for layer in layers]
    want = reference(layers[0])
    w0, ids0 = routed[0]

    def experts(fn):
        return lambda i: (lambda: fn(layers[i]["x"], layers[i]["w13"], layers[i]["w2"], *routed[i]))
    rows = [("layer, before (torch router + sorted grouped GEMMs)",
             lambda i: functools.partial(layer_before, layers[i]), layer_before(layers[0])),
            ("layer, now (Triton router + fused_moe)", lambda i: functools.partial(layer_now, layers[i]),
             layer_now(layers[0])),
            ("router: select_experts (torch)", lambda i: lambda: select_experts(router_logits(layers[i]), TOP_K, True),
             None),
            ("router: topk_softmax (Triton)", lambda i: lambda: topk_softmax(router_logits(layers[i]), TOP_K, True),
             None),
            ("experts (sorted, SiLU in the GEMM)", experts(functools.partial(fused_moe, gemv=False, silu_in_gemm=True)),
             fused_moe(layers[0]["x"], layers[0]["w13"], layers[0]["w2"], w0, ids0, gemv=False, silu_in_gemm=True)),
            ("experts (sorted, SiLU launch)", experts(functools.partial(fused_moe, gemv=False, silu_in_gemm=False)),
             fused_moe(layers[0]["x"], layers[0]["w13"], layers[0]["w2"], w0, ids0, gemv=False, silu_in_gemm=False))]
    if tokens <= 8:
        rows.append(("experts (gemv)", experts(functools.partial(fused_moe, gemv=True)),
                     fused_moe(layers[0]["x"], layers[0]["w13"], layers[0]["w2"], w0, ids0, gemv=True)))
    if args.tma and tokens * TOP_K > MAX_PAIRS_GEMV:
        same_tiles = [("experts (sorted, engine's tiles)", functools.partial(fused_moe, gemv=False, tiles=TILES))]
        for name, programs_per_sm in (("a program per work item", None), ("persistent, 1 per SM", 1),
                                      ("persistent, 2 per SM", 2)):
            same_tiles.append((f"experts (sorted, engine's tiles, TMA, {name})", functools.partial(
                fused_moe_tma, gemv=False, tiles=TILES, programs_per_sm=programs_per_sm)))
        rows += [(name, experts(fn), fn(layers[0]["x"], layers[0]["w13"], layers[0]["w2"], w0, ids0))
                 for name, fn in same_tiles]
    if args.sweep and tokens <= 2:
        for bn in (8, 16, 32):
            for bn_down in (4, 8, 16):
                for bk, warps in ((256, 4), (512, 4), (256, 8)):
                    cfg = dict(block_n=bn, block_n_down=bn_down, block_k=bk, num_warps=warps)
                    rows.append((f"sweep gemv {cfg}", experts(functools.partial(fused_moe_gemv, cfg=cfg)), None))
    if args.sweep and tokens >= 32:
        for bm in (16, 32, 64):
            for bn, bk, warps, stages in ((64, 64, 4, 3), (128, 64, 4, 3), (64, 128, 4, 3), (128, 128, 8, 3),
                                          (64, 64, 4, 4), (32, 64, 4, 3)):
                cfg = dict(block_m=bm, block_n=bn, block_k=bk, num_warps=warps, num_stages=stages, silu_in_gemm=True)
                rows.append((f"sweep grouped GEMM {cfg}", experts(functools.partial(fused_moe_with, cfg=cfg)), None))
    for name, make_call, out in rows:
        err = None if out is None else (out.float() - want).abs().max().item()
        try:
            us = 1e3 * bench_graph(make_call, num_copies)
        except Exception as e:  # noqa: BLE001 - a tile config that does not fit is a result too
            print(f"tokens {tokens:4d} {name}: failed: {type(e).__name__}: {e}", flush=True)
            continue
        reads_experts = name.startswith(("layer", "experts", "sweep"))
        row = dict(tokens=tokens, path=name, us=us, experts_hit=experts_hit(tokens), num_copies=num_copies,
                   expert_gb_per_s=bytes_per_call / (us * 1e-6) / 1e9 if reads_experts else None,
                   max_abs_err_vs_fp32_ref=err)
        results.append(row)
        print(f"tokens {tokens:4d}  {name:60s} {us:8.1f} us" + (f"  err {err:.3f}" if err is not None else ""),
              flush=True)


def fused_moe_with(x, w13, w2, topk_weights, topk_ids, cfg):
    """The sorted path at a given tile config (a one-entry table: every token count takes it)."""
    return fused_moe(x, w13, w2, topk_weights, topk_ids, gemv=False, tiles=MoeTiles(((1, cfg),)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4, 8, 32, 256])
    parser.add_argument("--sweep", action="store_true", help="also sweep the gemv and grouped-GEMM tiles")
    parser.add_argument("--tma", action="store_true", help="also time the TMA grouped GEMM at the engine's tiles")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    assert torch.cuda.is_available(), "bench_moe.py needs a CUDA GPU"
    gpu = torch.cuda.get_device_name()
    results = []
    for tokens in args.tokens:
        time_rows(tokens, args, results)
        torch.cuda.empty_cache()
    summary = dict(engine="aios", benchmark="moe-layer", gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                   date=datetime.date.today().isoformat(), shape=dict(experts=E, top_k=TOP_K, hidden=H, inter=INTER),
                   max_pairs_gemv=MAX_PAIRS_GEMV, default_sorted_config={t: fused_moe_config(t, TOP_K, torch.device(
                       "cuda"), TILES) for t in args.tokens}, rows=results)
    stem = os.path.join(args.out, f"moe-{summary['date']}-{gpu.replace(' ', '-')}")
    os.makedirs(args.out, exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    lines = [f"# One Qwen3-30B-A3B MoE layer: {gpu}", "", f"torch {torch.__version__}, triton {triton.__version__}, "
             f"{summary['date']}; bf16, CUDA graph, inputs cycled past L2.", "",
             "| tokens | path | us | GB/s of expert weights | max err vs fp32 ref |", "|---|---|---|---|---|"]
    for r in results:
        if not r["path"].startswith("sweep") or r is min((q for q in results if q["tokens"] == r["tokens"]
                                                          and q["path"][:10] == r["path"][:10]), key=lambda q: q["us"]):
            gbs = f"{r['expert_gb_per_s']:,.0f}" if r["expert_gb_per_s"] else "-"
            err = f"{r['max_abs_err_vs_fp32_ref']:.3f}" if r["max_abs_err_vs_fp32_ref"] is not None else "-"
            lines.append(f"| {r['tokens']} | {r['path']} | {r['us']:.1f} | {gbs} | {err} |")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
