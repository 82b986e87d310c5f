"""Count the kernel launches of one MoE layer's GPU path, on a CPU (lesson 16, issue 19).

    python benchmarks/moe_launches.py [--tokens 1 64] [--before-commit 5b86bb9]

Builds one Qwen3-MoE sparse block with Qwen3-30B-A3B's routing (128 experts, top-8; tiny hidden and
expert widths: the count does not depend on them) and the Triton backend, runs it once under
Triton's interpreter, and counts what the GPU would launch: the Triton kernels (each launch, by
name) and the torch ops that do work (aten ops the profiler records that are not views, empty
allocations or wrappers of other ops), once per call from Python. The Triton column is exact; the
torch column is what a CPU runs, within one or two of CUDA's kernels: topk is a select and a sort
on CUDA (one more), and CUDA's softmax upcasts bf16 inside its kernel (one fewer copy).

Paths: `torch router` (select_experts' torch ops) with the sorted grouped GEMMs and a SiLU launch,
and the engine's path now (`topk_softmax`, then the decode gemvs or the sorted grouped GEMMs by
pair count, the SiLU in the first GEMM: the CUDA config's choice up to 2048 pairs, which the CPU
config makes at every size, so keep --tokens <= 256 for CUDA's count).
With --before-commit, also that commit's router and fused_moe (aios/layers/fused_moe.py and
aios/kernels/fused_moe.py, read with git, dispatched as on CUDA): the path before issue 19's cuts.
"""

import argparse
import collections
import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

os.environ["TRITON_INTERPRET"] = "1"       # before triton is imported: the kernels run on the CPU

import torch  # noqa: E402
import triton  # noqa: E402
import triton.runtime.interpreter as interpreter  # noqa: E402

from aios.config import MoEConfig  # noqa: E402
from aios.kernels.fused_moe import fused_moe  # noqa: E402
from aios.layers.backend import TRITON  # noqa: E402
from aios.layers.fused_moe import select_experts  # noqa: E402
from aios.models.qwen3_moe import Qwen3MoeSparseMoeBlock  # noqa: E402

# aten ops that launch nothing on CUDA (metadata, allocation) or only wrap the ops they call
NO_KERNEL = {
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::view", "aten::reshape", "aten::_reshape_alias",
    "aten::as_strided", "aten::t", "aten::transpose", "aten::permute", "aten::expand", "aten::select",
    "aten::slice", "aten::narrow", "aten::unsqueeze", "aten::squeeze", "aten::flatten", "aten::alias",
    "aten::detach", "aten::lift_fresh", "aten::resize_", "aten::contiguous", "aten::to", "aten::_to_copy",
    "aten::linear", "aten::matmul", "aten::softmax", "aten::result_type", "aten::item", "aten::_local_scalar_dense",
    "aten::unbind", "aten::chunk", "aten::split", "aten::numpy_T", "aten::resolve_conj", "aten::resolve_neg",
}


def launches(fn) -> tuple[collections.Counter, collections.Counter]:
    """(Triton launches by kernel, torch work ops by name) of one call of fn. A torch op counts once
    per call from Python, less NO_KERNEL (views, allocations; a wrapper such as to / linear counts
    through the op it calls: copy_, mm), less what the interpreter itself runs inside a launch."""
    run = interpreter.InterpretedFunction.run

    def counting_run(self, *args, **kwargs):
        with torch.profiler.record_function("triton::" + self.fn.__name__.strip("_")):
            return run(self, *args, **kwargs)
    interpreter.InterpretedFunction.run = counting_run
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
    finally:
        interpreter.InterpretedFunction.run = run
    triton_kernels, torch_ops = collections.Counter(), collections.Counter()
    for e in prof.events():
        if e.name.startswith("triton::"):
            triton_kernels[e.name[len("triton::"):]] += 1
            continue
        if not e.name.startswith("aten::") or e.name in NO_KERNEL:
            continue
        ancestors, parent = [], e.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        inside_launch = any(a.startswith("triton::") for a in ancestors)
        nearest_aten = next((a for a in ancestors if a.startswith("aten::")), None)
        if not inside_launch and (nearest_aten is None or nearest_aten in NO_KERNEL):
            torch_ops[e.name] += 1                     # one torch call (or what a wrapper op calls)
    return triton_kernels, torch_ops


def fused_moe_at_commit(commit: str):
    """That commit's aios/kernels/fused_moe.py, dispatched as on CUDA (its layout and SiLU chose
    their torch references by the tensors' device)."""
    module = module_at_commit(commit, "aios/kernels/fused_moe.py")

    def layout_as_on_cuda(topk_ids, block_m, num_experts):
        num_pairs = topk_ids.numel()
        max_padded = triton.cdiv(num_pairs + min(num_pairs, num_experts) * (block_m - 1), block_m) * block_m
        if num_pairs <= module.MAX_PAIRS_ONE_PROGRAM:
            return module._moe_align_one_program(topk_ids, block_m, num_experts, max_padded)
        return module._moe_align_chunked(topk_ids, block_m, num_experts, max_padded)
    module.moe_align_block_size = layout_as_on_cuda
    module.silu_and_mul_ref = module.silu_and_mul
    return module.fused_moe


def module_at_commit(commit: str, path: str):
    source = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"before_{commit}", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def moe_block(hidden: int, inter: int) -> Qwen3MoeSparseMoeBlock:
    config = SimpleNamespace(hidden_size=hidden, moe=MoEConfig(128, 8, inter, True, (0,)))
    block = Qwen3MoeSparseMoeBlock(config, tp=None, backend=TRITON)
    g = torch.Generator().manual_seed(0)
    for p in block.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return block.to(torch.bfloat16)                             # the engine's dtype: its casts are launches too


def count(block, x, router, experts) -> tuple[collections.Counter, collections.Counter]:
    block.select_experts, block.experts.fused_moe = router, experts
    block(x)                                                    # warm: first calls of a kernel trace it
    return launches(lambda: block(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--before-commit", default=None, help="also count this commit's fused_moe (read with git)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    block = moe_block(hidden=64, inter=32)
    paths = {"torch router + sorted grouped GEMMs, SiLU launch": (select_experts, functools.partial(
                 fused_moe, gemv=False, silu_in_gemm=False)),
             "now: Triton router + fused_moe": (block.select_experts, fused_moe)}
    if args.before_commit:
        old_router = module_at_commit(args.before_commit, "aios/layers/fused_moe.py").select_experts
        paths = {f"before ({args.before_commit}): its router + its fused_moe": (old_router,
                                                                              fused_moe_at_commit(args.before_commit)),
                 **paths}
    print("one MoE layer (128 experts, top-8, bf16, the router's gate included): "
          "the GPU path's launches, counted on a CPU")
    print(f"{'tokens':>6}  {'path':55s}  {'triton':>6}  {'torch ops':>9}  {'total':>5}  what")
    for tokens in args.tokens:
        x = torch.randn(tokens, 64, generator=torch.Generator().manual_seed(tokens)).to(torch.bfloat16)
        for name, (router, experts) in paths.items():
            kernels, ops = count(block, x, router, experts)
            what = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in (kernels + ops).items())
            total = sum(kernels.values()) + sum(ops.values())
            print(f"{tokens:>6}  {name:55s}  {sum(kernels.values()):>6}  {sum(ops.values()):>9}  {total:>5}  {what}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
