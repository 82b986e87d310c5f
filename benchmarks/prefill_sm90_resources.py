"""Shared memory, registers and spills of every prefill tile of bench_kernels.py's sweep, for the
H200 (sm_90), on a machine without a GPU.

    PYTHONPATH=$PWD python benchmarks/prefill_sm90_resources.py [--tiles 64,64,4,3 128,64,8,3 ...]
    PYTHONPATH=$PWD python benchmarks/prefill_sm90_resources.py --tma   # prefill_attention_tma's TMA_TILES and WS_TILES

Each tile is launched through `_prefill_attention_launch` (bf16, head_dim 128, block size 256;
unpacked at Qwen3-0.6B's 16/8 heads, packed at the 8B's 32/8) with tests/sm90_compile.py's harness,
which compiles it for sm_90 instead of running it; then Triton's ptxas assembles the PTX again with
-v and its report is printed. What a run on the GPU alone shows: occupancy, and the speed. A tile
with spill stores or at 255 registers is a likely loser of the sweep. With --tma the tiles are
prefill_attention_tma's (block_m, block_n, warps, stages, warp_specialize), launched through
`_prefill_attention_tma_launch`, and the warps the compiled kernel runs are printed (warp
specialization adds warp groups). Another Triton's compiler: put it first on PYTHONPATH.
"""

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", nargs="*", help="block_m,block_n,num_warps,num_stages (default: PREFILL_SWEEP)")
    parser.add_argument("--tma", action="store_true",
                        help="prefill_attention_tma's tiles (default: TMA_TILES and WS_TILES)")
    args = parser.parse_args()
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "the interpreter compiles nothing: run without it"
    import sm90_compile
    from triton.backends.nvidia.compiler import get_ptxas

    from aios.kernels.prefill_attention_tma import TMA_TILES, WS_TILES, _prefill_attention_tma_launch
    from benchmarks.kernel_bench.prefill import PREFILL_SWEEP

    tiles = [tuple(int(v) for v in t.split(",")) for t in args.tiles] if args.tiles else None
    tiles = tiles or (TMA_TILES + WS_TILES if args.tma else PREFILL_SWEEP)
    compiled = []
    real_compile = triton.compile
    sm90_compile.triton.compile = lambda *a, **k: compiled.append(real_compile(*a, **k)) or compiled[-1]
    compiler = sm90_compile.Sm90Compiler()
    sm90_compile.as_on_the_h200()
    sm90_compile.compile_instead_of_launching(compiler)
    prefill = importlib.import_module("aios.kernels.prefill_attention")   # aios.kernels' name is the function
    ptxas = getattr(get_ptxas(90), "path", get_ptxas(90))   # a str on older Tritons
    print(f"triton {triton.__version__}")
    print(f"{'tile (block_m, block_n, warps, stages)':40s} {'mode':9s} {'shared B':>9s}  ptxas -v (sm_90a)")
    for tile in tiles:
        for num_heads, pack_gqa in ((16, False), (32, True)):
            q = torch.empty(2048, num_heads, 128, dtype=torch.bfloat16)
            k_cache = torch.empty(64, 256, 8, 128, dtype=torch.bfloat16)
            cu, tables = torch.tensor([0, 1024, 2048], dtype=torch.int32), torch.zeros(2, 16, dtype=torch.int32)
            before = len(compiler.records)
            if args.tma:     # no packing in the TMA variant: 32/8 heads is the 8B's GQA group of 4
                _prefill_attention_tma_launch(q, k_cache, k_cache, cu, cu, 1024, tables, 128 ** -0.5, *tile[:4],
                                              bool(tile[4]), allow_warp_specialize=True)
            else:
                prefill._prefill_attention_launch(q, k_cache, k_cache, cu, cu, 1024, tables, 128 ** -0.5,
                                                  *tile, pack_gqa=pack_gqa)
            compiler.wait()                                 # the compile runs on the compiler's pool
            record = compiler.records[-1] if len(compiler.records) > before else None
            mode = ("h32/8" if pack_gqa else "h16/8") if args.tma else ("packed" if pack_gqa else "unpacked")
            if record is None or not record["ok"]:
                print(f"{str(tile):40s} {mode:9s} failed: "
                      f"{record and record['error'][:200]}")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                ptx = os.path.join(tmp, "k.ptx")
                with open(ptx, "w") as f:
                    f.write(compiled[-1].asm["ptx"])
                out = subprocess.run([ptxas, "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a", ptx, "-o",
                                      os.path.join(tmp, "k.o")], capture_output=True, text=True)
            report = [re.sub(r".*info\s*:\s*", "", line) for line in (out.stdout + out.stderr).splitlines()
                      if "registers" in line or "spill" in line]
            print(f"{str(tile):40s} {mode:9s} {record['shared']:9d}  {record['warps']} warps | "
                  + " | ".join(report), flush=True)


if __name__ == "__main__":
    main()
