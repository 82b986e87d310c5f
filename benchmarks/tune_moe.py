"""Measure the fused MoE's best grouped-GEMM tiles on this GPU and write the engine's tile table.

    python benchmarks/tune_moe.py                       # Qwen3-30B-A3B's experts: E=128, H=2048, I=768, top-8
    python benchmarks/tune_moe.py --experts 64 --hidden 2048 --inter 1408 --top-k 6 --tokens 16 256 4096

For each token count of the ladder (the sorted path's range: decode batches of 4 tokens and up to
a 16k-token prefill chunk) it times `fused_moe` (the layout, both grouped GEMMs, the SiLU and the
top-k sum) at every candidate tile config, SiLU inside the first GEMM and as its own launch, inside
a CUDA graph with the expert weights cycled past L2 (bench_kernels.bench_graph), and keeps the
fastest. Every candidate's output is first checked against the rule-based default's
(`fused_moe_config` with no table): a config that computes something else is refused, not timed.
Routing is uniform (random router logits through `topk_softmax`), as a dummy-weight benchmark's is.

Writes the table, E=..,N=..,device_name=...json, into --table-dir (default
aios/kernels/configs/fused_moe/, where FusedMoE looks: aios/kernels/moe_tiles.py), and every timing,
with the default rule's beside the best, to --out/moe-tune-<date>-<gpu>.json. --max-seconds stops
the ladder early and writes what it measured.

    python benchmarks/tune_moe.py --gemm tma --tiles table --tokens 64 128 256 512 4096

times aios/kernels/fused_moe_tma.py's grouped GEMM (TMA weight loads, a persistent grid of
--programs-per-sm per SM, 0: a program per work item) at each candidate's tiles, right after the
default kernel at the same tiles, both checked against the default rule's output first; it writes
its own table, E=..,N=..,device_name=..,gemm=tma.json, and moe-tune-tma-<date>-<gpu>.json, and
leaves the committed table alone.
"""

import argparse
import datetime
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))     # this checkout's aios

import torch  # noqa: E402
import triton  # noqa: E402

from aios.kernels.fused_moe import fused_moe, fused_moe_config  # noqa: E402
from aios.kernels.fused_moe_tma import fused_moe_tma  # noqa: E402
from aios.kernels.moe_gemv import MAX_PAIRS_GEMV  # noqa: E402
from aios.kernels.moe_tiles import CONFIG_DIR, GEMM_KEYS, MoeTiles  # noqa: E402
from aios.kernels.topk_softmax import topk_softmax  # noqa: E402
from benchmarks.kernel_bench.timing import bench_graph  # noqa: E402

TOKENS = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
TILES = [  # (block_n, block_k, num_warps, num_stages)
    (64, 64, 4, 3), (64, 128, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3),
    (128, 128, 8, 3), (64, 64, 4, 4), (128, 128, 4, 3), (64, 128, 8, 4),
]
# --tiles wide: deeper pipelines and wider N tiles, for the bandwidth-bound decode sizes (each expert
# a row block or two, every expert's weights streamed once a step)
WIDE_TILES = [
    (64, 128, 4, 5), (64, 256, 4, 2), (128, 128, 4, 4), (128, 128, 4, 2),
    (256, 128, 4, 2), (256, 128, 8, 2), (256, 64, 8, 3), (128, 256, 8, 2),
]
BLOCK_M = [16, 32, 64, 128]
MIN_BYTES_CYCLED = 256 << 20


def candidates(num_tokens: int, top_k: int, num_experts: int, tiles: list = TILES,
               silu_modes: tuple[bool, ...] = (True, False)) -> list[dict]:
    pairs_per_expert = num_tokens * top_k / num_experts
    out = []
    for block_m in BLOCK_M:
        if block_m > 16 and block_m > 4 * pairs_per_expert:      # mostly padding: never the fastest
            continue
        for block_n, block_k, num_warps, num_stages in tiles:
            for silu_in_gemm in silu_modes:
                out.append(dict(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps,
                                num_stages=num_stages, silu_in_gemm=silu_in_gemm))
    return out


def make_layers(args, num_tokens: int, gen: torch.Generator) -> list[dict]:
    e, h, i, k = args.experts, args.hidden, args.inter, args.top_k
    expert_bytes = 3 * h * i * 2
    hit = e * (1 - (1 - k / e) ** num_tokens)
    num_copies = max(1, min(8, math.ceil(MIN_BYTES_CYCLED / (hit * expert_bytes))))

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=gen) * scale).to(torch.bfloat16)
    layers = []
    for _ in range(num_copies):
        logits = torch.randn(num_tokens, e, device="cuda", generator=gen)
        weights, ids = topk_softmax(logits, k, True)
        layers.append(dict(x=randn(num_tokens, h), w13=randn(e, 2 * i, h, scale=h ** -0.5),
                           w2=randn(e, h, i, scale=i ** -0.5), weights=weights, ids=ids))
    return layers


def run_with(layer: dict, cfg: dict | None, gemm: str = "triton") -> torch.Tensor:
    """fused_moe's sorted path at `cfg` (a one-entry table: every token count takes it; None: the
    rule-based default, no table); gemm "tma": fused_moe_tma's, cfg's programs_per_sm included."""
    tiles = None if cfg is None else MoeTiles(((1, cfg),))
    moe = fused_moe if gemm == "triton" else fused_moe_tma
    return moe(layer["x"], layer["w13"], layer["w2"], layer["weights"], layer["ids"], gemv=False, tiles=tiles)


def gemm_candidates(args, num_tokens: int) -> list[tuple[str, dict]]:
    """(gemm, cfg) to time: the tile candidates (--tiles table: the engine's table entry alone)
    through the default kernel, and with --gemm tma each also through the TMA kernel at every
    --programs-per-sm, right after the default kernel at the same tiles."""
    if args.tiles == "table":
        table = MoeTiles.load(args.experts, args.inter, torch.cuda.get_device_name(), CONFIG_DIR)
        assert table is not None, "--tiles table: no committed tile table for this shape and GPU"
        base = [table.choose(num_tokens)]
    else:
        tiles = {"base": TILES, "wide": WIDE_TILES, "all": TILES + WIDE_TILES}[args.tiles]
        silu_modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.silu_in_gemm]
        base = candidates(num_tokens, args.top_k, args.experts, tiles, silu_modes)
    out = []
    for cfg in base:
        out.append(("triton", cfg))
        if args.gemm == "tma":
            out += [("tma", {**cfg, "programs_per_sm": p or None}) for p in args.programs_per_sm]
    return out


def tune_one(args, num_tokens: int, rows: list, table_entry: dict | None = None) -> dict | None:
    """The fastest candidate at num_tokens (`table_entry`, the engine's table's, competes too)."""
    gen = torch.Generator(device="cuda").manual_seed(num_tokens)
    layers = make_layers(args, num_tokens, gen)
    calls_per_graph = 64 if num_tokens <= 1024 else 8
    want = run_with(layers[0], None).float()
    tol = 2e-2 * want.abs().max().item() + 1e-3

    def time_cfg(cfg, gemm="triton"):
        return 1e3 * bench_graph(lambda c: (lambda: run_with(layers[c], cfg, gemm)), len(layers), calls_per_graph)
    default_us = time_cfg(None)
    default = fused_moe_config(num_tokens, args.top_k, torch.device("cuda"))
    rows.append(dict(num_tokens=num_tokens, config=default, us=default_us, default=True))
    best, best_us, same_tiles_us = None, math.inf, {}
    if table_entry is not None:
        best = table_entry
        best_us = time_cfg(best)
        rows.append(dict(num_tokens=num_tokens, config=best, us=best_us, table=True))
    for gemm, cfg in gemm_candidates(args, num_tokens):
        try:
            err = (run_with(layers[0], cfg, gemm).float() - want).abs().max().item()
            if err > tol:
                print(f"tokens {num_tokens:6d} {gemm} {cfg}: refused, max |diff| {err:.3g} vs the default's output",
                      flush=True)
                rows.append(dict(num_tokens=num_tokens, gemm=gemm, config=cfg, us=None, error=f"max |diff| {err:.3g}"))
                continue
            us = time_cfg(cfg, gemm)
        except Exception as e:  # noqa: BLE001 - a tile that does not fit (shared memory) is a result too
            print(f"tokens {num_tokens:6d} {gemm} {cfg}: failed: {type(e).__name__}", flush=True)
            rows.append(dict(num_tokens=num_tokens, gemm=gemm, config=cfg, us=None, error=type(e).__name__))
            continue
        rows.append(dict(num_tokens=num_tokens, gemm=gemm, config=cfg, us=us))
        if gemm == "triton":
            same_tiles_us[repr(cfg)] = us
        if args.gemm == "tma" and gemm == "tma":
            base_us = same_tiles_us.get(repr({k: v for k, v in cfg.items() if k != "programs_per_sm"}))
            print(f"tokens {num_tokens:6d} {cfg}: tma {us:8.1f} us, default kernel at these tiles "
                  + (f"{base_us:8.1f} us ({base_us / us:.2f}x)" if base_us else "failed or refused"), flush=True)
        if gemm == args.gemm and us < best_us:
            best, best_us = cfg, us
    if best is not None:
        print(f"tokens {num_tokens:6d}: best {args.gemm} {best} {best_us:8.1f} us, default rule {default_us:8.1f} us "
              f"({default_us / best_us:.2f}x)", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--inter", type=int, default=768, help="moe_intermediate_size per rank")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    parser.add_argument("--table-dir", default=str(CONFIG_DIR), help="where the tile table goes")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="where every timing goes (JSON)")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop the ladder after this long")
    parser.add_argument("--tiles", choices=("base", "wide", "all", "table"), default="base",
                        help="the candidate (block_n, block_k, warps, stages): TILES, WIDE_TILES or both; table: "
                             "the committed table's entry alone (its block_m and SiLU placement too)")
    parser.add_argument("--silu-in-gemm", choices=("both", "on", "off"), default="both",
                        help="time candidates with the SiLU inside the first GEMM, as its own launch, or both")
    parser.add_argument("--merge", action="store_true",
                        help="start from the table the engine loads for this shape and GPU (aios/kernels/configs/"
                             "fused_moe/, whatever --table-dir says): its entry at each token count competes "
                             "with the candidates, and the token counts not tuned keep theirs")
    parser.add_argument("--gemm", choices=("triton", "tma"), default="triton",
                        help="tma: tune aios/kernels/fused_moe_tma.py's grouped GEMM, each candidate timed right "
                             "after the default kernel at the same tiles; its table goes to a file of its own "
                             "(..,gemm=tma.json), the committed table is left as it is")
    parser.add_argument("--programs-per-sm", type=int, nargs="+", default=[0, 1, 2],
                        help="--gemm tma: the persistent grids to try (0: one program per work item)")
    args = parser.parse_args()
    if args.gemm == "tma" and args.merge:
        parser.error("--merge starts from the default kernel's table; with --gemm tma leave it out")
    assert torch.cuda.is_available(), "tune_moe.py needs a CUDA GPU"
    gpu = torch.cuda.get_device_name()
    start, table, rows = time.time(), {}, []
    if args.merge:                                       # the engine's table: its entries compete, the rest stay
        existing = MoeTiles.load(args.experts, args.inter, gpu, CONFIG_DIR)
        table = dict(existing.by_num_tokens) if existing is not None else {}
    merged = dict(table)
    for num_tokens in args.tokens:
        if num_tokens * args.top_k <= MAX_PAIRS_GEMV:
            print(f"tokens {num_tokens}: the decode gemvs (<= {MAX_PAIRS_GEMV} pairs), no grouped GEMM to tune")
            continue
        if args.max_seconds is not None and time.time() - start > args.max_seconds:
            print(f"--max-seconds reached before {num_tokens} tokens: the table stops at {max(table, default=0)}")
            break
        best = tune_one(args, num_tokens, rows, merged.get(num_tokens))
        if best is not None:
            table[num_tokens] = best
        torch.cuda.empty_cache()
    if table:                               # the TMA kernel's goes to a file of its own (moe_tiles.GEMM_KEYS)
        gemm = None if args.gemm == "triton" else args.gemm
        path = MoeTiles.from_dict(table, GEMM_KEYS[gemm]).save(args.experts, args.inter, gpu, args.table_dir, gemm)
        print(f"tile table: {path}")
    summary = dict(benchmark="moe-tune", gemm=args.gemm, gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                   date=datetime.date.today().isoformat(), aios_git=os.environ.get("AIOS_GIT"),
                   shape=dict(experts=args.experts, hidden=args.hidden, inter=args.inter, top_k=args.top_k),
                   wall_s=time.time() - start, table={str(t): c for t, c in table.items()}, rows=rows)
    os.makedirs(args.out, exist_ok=True)
    tag = f"-{summary['aios_git']}" if summary["aios_git"] else ""
    stem = "moe-tune" if args.gemm == "triton" else "moe-tune-tma"
    with open(os.path.join(args.out, f"{stem}-{summary['date']}-{gpu.replace(' ', '-')}{tag}.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
