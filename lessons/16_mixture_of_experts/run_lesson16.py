#!/usr/bin/env python
"""Lesson 16: Mixture of Experts. Each token runs k of E expert MLPs, chosen by a router.

    routing      : a tiny random Qwen3-MoE in the engine; how many tokens each expert got (load imbalance)
    the layout   : the (token, expert) pairs sorted by expert and padded to the block size, so one
                   grouped GEMM covers every expert (moe_align_block_size)
    ref vs fused : fused_moe_ref (every expert on every token) vs fused_moe (routed pairs only, Triton)
    bytes/token  : what one decode step reads for Qwen3-30B-A3B's shape, vs a dense model of its size

With no --model (or one without experts), a tiny random Qwen3-MoE (8 experts, top-2) is built by
transformers in a temp dir.
"""

from __future__ import annotations

import functools
import os
import tempfile

from lessons import common

# Qwen3-30B-A3B's config.json (the parts that size it)
QWEN3_30B_A3B = dict(vocab_size=151936, hidden_size=2048, num_hidden_layers=48, num_attention_heads=32,
                     num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
                     moe_intermediate_size=768, tie_word_embeddings=False)


def weight_bytes(c: dict, dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes of each kind of weight (norms left out: a few KB)."""
    h, d = c["hidden_size"], c["head_dim"]
    attention = h * d * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"])     # q, k, v, o
    expert = 3 * h * c["moe_intermediate_size"]                                            # gate, up, down
    layers = c["num_hidden_layers"]
    return {"embedding": c["vocab_size"] * h * dtype_bytes,
            "lm_head": (0 if c["tie_word_embeddings"] else c["vocab_size"] * h) * dtype_bytes,
            "attention": layers * attention * dtype_bytes,
            "router": layers * c["num_experts"] * h * dtype_bytes,
            "expert": expert * dtype_bytes,                                                # one expert, one layer
            "experts": layers * c["num_experts"] * expert * dtype_bytes}


def experts_touched(num_experts: int, top_k: int, batch: int) -> float:
    """Expected distinct experts a layer runs for `batch` tokens routed uniformly at random."""
    return num_experts * (1 - (1 - top_k / num_experts) ** batch)


def bytes_rows(c: dict, batches: list[int]) -> list[list]:
    w = weight_bytes(c)
    total = sum(v for k, v in w.items() if k != "expert")
    always = w["lm_head"] + w["attention"] + w["router"]          # read every step whatever the batch
    rows = []
    for b in batches:
        active = experts_touched(c["num_experts"], c["num_experts_per_tok"], b)
        moe = always + c["num_hidden_layers"] * active * w["expert"] + b * c["hidden_size"] * 2
        rows.append([b, f"top-{c['num_experts_per_tok']} of {c['num_experts']} experts", active, moe / 1e9,
                     moe / b / 1e6, total / 1e9, total / b / 1e6])
    return rows


def is_moe(model_dir: str) -> bool:
    import json

    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            return json.load(f).get("model_type") == "qwen3_moe"
    except (OSError, ValueError):
        return False


def seconds_per_call(fn, args: tuple, device: str, repeat: int) -> float:
    """On a GPU replayed from a CUDA graph, as the engine's decode steps run (no launch overhead)."""
    import torch

    fn(*args)                                                   # compile outside the capture
    run = lambda: fn(*args)                                     # noqa: E731
    if device == "cuda":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn(*args)
        run = graph.replay
    with common.Timer(device) as timer:
        for _ in range(repeat):
            run()
    return timer.seconds / repeat


def main() -> None:
    args = common.parser(__doc__).parse_args()
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")          # before triton is imported: kernels on the CPU
    tmp = None
    if args.model is not None and not is_moe(args.model):
        print(f"--model {args.model} has no experts (it is not a Qwen3-MoE checkpoint): "
              "using a tiny random Qwen3-MoE instead")
        args.model = None
    if args.model is None:
        from aios.utils.tiny_checkpoint_qwen3_moe import make_qwen3_moe_checkpoint

        tmp = tempfile.TemporaryDirectory()
        args.model = make_qwen3_moe_checkpoint(os.path.join(tmp.name, "tiny-qwen3-moe"), num_experts=8,
                                               num_experts_per_tok=2)
    args = common.setup(args)

    from aios import LLM, SamplingParams
    from aios.kernels.fused_moe import fused_moe, fused_moe_config, fused_moe_ref
    from aios.kernels.moe_align import moe_align_block_size
    from aios.kernels.moe_gemv import MAX_PAIRS_GEMV
    from aios.layers.fused_moe import measured_tiles, select_experts

    print(common.describe(args))

    common.heading("routing: tokens per expert in layer 0 (router of the tiny random Qwen3-MoE)")
    # eager: a forward hook does not run when a CUDA graph replays a decode step
    llm = LLM(args.model, device=args.device, dtype="float32", skip_tokenizer_init=args.skip_tokenizer_init,
              enforce_eager=True)
    moe = llm.model_runner.model.model.layers[0].mlp
    chosen = []
    hook = moe.gate.register_forward_hook(lambda module, inputs, logits: chosen.append(
        select_experts(logits, moe.top_k, moe.norm_topk_prob)[1].flatten().cpu()))
    prompts = common.prompts(args, 4 if args.quick else 16)
    llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8 if args.quick else 32, ignore_eos=True),
                 use_tqdm=False)
    hook.remove()
    ids = torch.cat(chosen)
    num_experts = moe.experts.num_experts
    counts = torch.bincount(ids, minlength=num_experts)
    mean = counts.float().mean().item()
    rows = [[e, int(n), n.item() / ids.numel(), n.item() / mean] for e, n in enumerate(counts)]
    print(common.table(["expert", "tokens routed", "share", "x the mean"], rows))
    print(f"{ids.numel() // moe.top_k} tokens x top-{moe.top_k}: load imbalance (busiest / mean) = "
          f"{counts.max().item() / mean:.2f}")
    llm.close()

    common.heading("the grouped GEMM's layout: 6 tokens, top-2 of 4 experts, blocks of 4 rows")
    topk_ids = torch.tensor([[0, 3], [3, 1], [0, 3], [1, 0], [3, 2], [0, 1]], device=args.device)
    sorted_ids, expert_ids, num_post = moe_align_block_size(topk_ids, block_m=4, num_experts=4)
    used = int(num_post.item())
    print(f"topk_ids (token -> its 2 experts): {topk_ids.tolist()}")
    print(f"sorted_token_ids (pair t*2+j, 12 = padding): {sorted_ids[:used].tolist()}")
    print(f"expert_ids (one per block of 4 rows):        {expert_ids[:used // 4].tolist()}")
    print(f"rows computed {used} for {topk_ids.numel()} pairs: {used - topk_ids.numel()} padding rows")

    common.heading("reference vs fused: one MoE layer, microseconds per call, random routing")
    if args.device == "cuda":
        c, dtype = QWEN3_30B_A3B, torch.bfloat16
        token_counts = [1, 64] if args.quick else [1, 8, 64, 512, 4096]
        print("(Qwen3-30B-A3B's layer shape: 128 experts, top-8, hidden 2048, moe_intermediate 768, bf16; "
              "each replayed from a CUDA graph)")
    else:
        c = dict(hidden_size=64, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
        dtype, token_counts = torch.float32, [1, 16] if args.quick else [1, 16, 64]
        print("(tiny shape: 8 experts, top-2, hidden 64; on a CPU the Triton kernel runs in its interpreter, "
              "so its time is not a speed)")
    g = torch.Generator().manual_seed(0)
    h, inter, e, k = c["hidden_size"], c["moe_intermediate_size"], c["num_experts"], c["num_experts_per_tok"]
    w13 = (torch.randn(e, 2 * inter, h, generator=g) * h ** -0.5).to(args.device, dtype)
    w2 = (torch.randn(e, h, inter, generator=g) * inter ** -0.5).to(args.device, dtype)
    with torch.device(args.device):                   # the tiles the engine's FusedMoE layer would take
        tiles = measured_tiles(e, inter)
    fused = functools.partial(fused_moe, tiles=tiles)
    if tiles is not None:
        print(f"(the grouped GEMMs' tiles: the table benchmarks/tune_moe.py measured on this GPU, "
              f"{len(tiles.by_num_tokens)} token counts)")
    rows = []
    for t in token_counts:
        x = torch.randn(t, h, generator=g).to(args.device, dtype)
        weights, ids = select_experts(torch.randn(t, e, generator=g).to(args.device, dtype), k, True)
        repeat = 3 if args.device == "cpu" else 20
        times = {name: seconds_per_call(fn, (x, w13, w2, weights, ids), args.device, repeat)
                 for name, fn in (("ref", fused_moe_ref), ("fused", fused))}
        diff = (fused_moe_ref(x, w13, w2, weights, ids).float() - fused(x, w13, w2, weights, ids).float()
                ).abs().max().item()
        active = ids.unique().numel()
        expert_bytes = active * 3 * h * inter * w13.element_size()
        path = "decode gemvs" if t * k <= MAX_PAIRS_GEMV else "grouped GEMM"
        rows.append([t, "reference (every expert, every token)", 1e6 * times["ref"],
                     f"fused (routed pairs, {path})", 1e6 * times["fused"], active,
                     expert_bytes / times["fused"] / 1e9, diff])
    print(common.table(["tokens", "reference", "us", "fused", "us", "experts hit", "fused: GB/s of experts",
                        "max |diff|"], rows))
    block_m = fused_moe_config(token_counts[1], k, torch.device(args.device), tiles)["block_m"]
    print(f"(up to {MAX_PAIRS_GEMV} pairs the decode gemvs, no layout; block_m of the grouped GEMM at "
          f"{token_counts[1]} tokens: {block_m} rows, each expert hit computes at least one block)")

    common.heading("bytes one decode step reads: Qwen3-30B-A3B's shape (bf16) vs a dense model of its size")
    rows = bytes_rows(QWEN3_30B_A3B, [1, 8, 64, 256])
    for r in rows:
        r.insert(5, "dense model of the same size")
    print(common.table(["batch", "MoE", "experts touched per layer", "GB read per step", "MB per token",
                        "dense", "GB read per step", "MB per token"], rows))
    w = weight_bytes(QWEN3_30B_A3B)
    total = sum(v for key, v in w.items() if key != "expert")
    active = w["lm_head"] + w["attention"] + w["router"] + QWEN3_30B_A3B["num_hidden_layers"] * 8 * w["expert"]
    print(f"weights: {total / 1e9:.1f} GB in all, {active / 1e9:.2f} GB active for one token "
          f"({total / active:.1f}x less to read at batch 1)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
