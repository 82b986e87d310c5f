"""Time AIOS's Triton kernels on the GPU against their baselines and rooflines.

    python benchmarks/bench_kernels.py [--quick] [--only gemv,gemv_silu_and_mul] [--sweep prefill,decode] [--out DIR]
    python benchmarks/bench_kernels.py --only prefill --sweep prefill --prefill-block-sizes 256 \
        --prefill-cases 1x16384,1x8192+8192,1x2048+14336 --prefill-heads 16/8,32/8

- prefill attention (by default 8 x 1024 tokens, 16 q heads / 8 kv heads, head_dim 128, bf16,
  causal) over the paged cache at block sizes 16/64/256, vs torch SDPA on contiguous K/V (its own
  pick, FlashAttention-2 and cuDNN pinned) and, for fresh prompts, torch's varlen kernels on packed
  K/V (cuDNN's ragged path and FlashAttention-2, with and without a gather of K/V out of a paged
  cache): ms and TFLOP/s. --prefill-cases / --prefill-heads pick other shapes: long prompts, and
  the chunks of a chunked prefill (SxC+L: a C-token chunk whose first L tokens are in the cache, what the engine
  runs when a prompt is longer than max_num_batched_tokens). Each tile config runs unpacked and,
  where the GQA group is > 1, packed (all q heads of a kv head in one tile). On Hopper, the opt-in
  TMA variant (aios/kernels/prefill_attention_tma.py) runs at each of its TMA_TILES ("triton tma";
  its warp-specialized WS_TILES are refused on the GPU, never timed); where it does not apply (not
  sm_90, a block size its block_n does not divide) the row is skipped with the reason printed.
- decode attention (batch 1/32/256, context 512..4096; --decode-cases others, --decode-splits
  other split counts beside the rule's, --decode-tiles other tiles at each) vs the bandwidth floor
  (bytes of K/V read / 3.0 TB/s): us, achieved TB/s, % of floor.
- gemv (batch-1 linear layers of Qwen3-0.6B and 8B) vs cuBLAS (F.linear), with a config sweep.
- fused_gemv: add_rmsnorm_gemv (before qkv / gate_up) vs fused_add_rms_norm then gemv, and
  silu_mul_gemv (down) vs silu_and_mul then gemv, on the same shapes; and the LM head at one row
  (gemv, and the final norm fused into it, vs rms_norm then F.linear), which the engine leaves to cuBLAS.
- gemv_silu_and_mul: the gate_up gemv with SiLU(gate) * up in its epilogue vs gemv then silu_and_mul
  (and cuBLAS then silu_and_mul), alone and as the whole one-token MLP with down_proj's gemv after it
  (three launches vs two), on the Qwen3-0.6B and 8B shapes (`--only gemv_silu_and_mul`).
- skinny_gemm (opt-in, not in the engine): x of 2 ... 64 rows times the same shapes' weights vs
  cuBLAS, what a decode batch's matmuls are (`--only skinny_gemm [--sweep skinny_gemm]`).
- rms_norm, fused_add_rms_norm, silu_and_mul, qk_norm_rope (alone and fused with the KV store),
  store_kvcache, sample (one-pass Gumbel-max over a 151,936 vocabulary) vs their torch refs.

Every case checks the kernel's output against its ref before timing it. Decode and the small
kernels are timed inside a CUDA graph (as the engine runs them) over enough distinct copies of
their inputs that the working set exceeds L2, so the bandwidth is HBM's, not L2's.
Writes kernels-<date>-<gpu>.json and .md under --out; prints a table last. Each part is a module
of benchmarks/kernel_bench/ (prefill, decode, gemv, small; timing: how a call is timed; report:
the markdown); this file is the command line.
"""
import argparse
import datetime
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))     # this checkout: benchmarks.*

import torch  # noqa: E402
import triton  # noqa: E402

from benchmarks.kernel_bench.decode import bench_decode  # noqa: E402
from benchmarks.kernel_bench.gemv import (  # noqa: E402
    bench_fused_gemv,
    bench_gemv,
    bench_gemv_silu_and_mul,
    bench_skinny_gemm,
)
from benchmarks.kernel_bench.prefill import bench_prefill  # noqa: E402
from benchmarks.kernel_bench.report import summary_markdown  # noqa: E402
from benchmarks.kernel_bench.small import bench_small_kernels  # noqa: E402
from benchmarks.kernel_bench.timing import HBM_BYTES_PER_S  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--sweep", default="",
                        help="also sweep tile configs of: prefill,decode,gemv,fused_gemv,gemv_silu_and_mul,skinny_gemm")
    parser.add_argument("--only", default="prefill,decode,gemv,fused_gemv,gemv_silu_and_mul,skinny_gemm,small")
    parser.add_argument("--prefill-cases", default="8x1024",
                        help="prefill shapes: SxC (S sequences of C tokens) or SxC+L (a C-token chunk after L "
                             "cached tokens, as chunked prefill runs), comma-separated")
    parser.add_argument("--prefill-heads", default="16/8", help="q/kv heads, comma-separated (8B: 32/8)")
    parser.add_argument("--prefill-block-sizes", default="16,64,256", help="KV block sizes of the prefill cases")
    parser.add_argument("--decode-cases", default="",
                        help="decode shapes BxC (B sequences, C tokens of context each), comma-separated; "
                             "e.g. 16x16384, the long16k workload's decode step (default: 1/32/256 x 512..4096)")
    parser.add_argument("--decode-block-sizes", default="16,64,256", help="KV block sizes of the decode cases")
    parser.add_argument("--decode-splits", default="",
                        help="also time these num_splits at every decode case (the default rule's is the "
                             "'default' row), e.g. 1,2,3,4,6,8,16: where the split count's waves fall")
    parser.add_argument("--decode-tiles", default="",
                        help="also time these decode tiles BLOCK_N/num_warps/num_stages (e.g. 128/8/2,32/4/2) "
                             "at the rule's split count and at each of --decode-splits")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    assert torch.cuda.is_available(), "bench_kernels.py needs a CUDA GPU"
    gpu = torch.cuda.get_device_name()
    results = dict(engine="aios", benchmark="kernels", gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                   date=datetime.date.today().isoformat(), hbm_floor_bytes_per_s=HBM_BYTES_PER_S,
                   prefill=[], decode=[], gemv=[], fused_gemv=[], gemv_silu_and_mul=[], skinny_gemm=[], small=[])
    stem = os.path.join(args.out, f"kernels-{results['date']}-{gpu.replace(' ', '-')}")
    os.makedirs(args.out, exist_ok=True)
    for part, fn in (("prefill", bench_prefill), ("decode", bench_decode), ("gemv", bench_gemv),
                     ("fused_gemv", bench_fused_gemv), ("gemv_silu_and_mul", bench_gemv_silu_and_mul),
                     ("skinny_gemm", bench_skinny_gemm), ("small", bench_small_kernels)):
        if part in args.only.split(","):
            try:
                fn(args, results)
            except Exception:  # noqa: BLE001 - report it, keep the other parts' numbers
                traceback.print_exc()
            torch.cuda.empty_cache()
            with open(stem + ".json", "w") as f:  # after every part: a timeout keeps what was measured
                json.dump(results, f, indent=1)
    md = summary_markdown(results)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print("\n" + md)


if __name__ == "__main__":
    main()
