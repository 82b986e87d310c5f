#!/usr/bin/env python
"""Lesson 09: FlashAttention. Online softmax, tiled; AIOS's Triton prefill and paged-decode kernels.

    torch reference (lesson 08) : attention_backend="torch": the score matrix is built whole
    FlashAttention  (lesson 09) : attention_backend="triton": tiles of keys streamed through an
                                  online softmax, never the whole matrix (aios/kernels/)

On a CPU: the online-softmax math (reference vs a tiled torch loop), then the Triton kernels
themselves, run by Triton's CPU interpreter (TRITON_INTERPRET=1) at tiny shapes, against their
torch references. On a GPU: the engine with attention_backend torch vs triton.
"""

from __future__ import annotations

import os

from lessons import common


def main() -> None:
    import torch

    ap = common.parser(__doc__)
    ap.add_argument("--mine", action="store_true",
                    help="also run your online softmax and prefill_attention (workspace/lesson09.py), in the engine")
    args = ap.parse_args()
    if args.device == "cpu" or not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported: @jit reads it
    args = common.setup(args)

    from aios.kernels import decode_attention, decode_attention_ref, prefill_attention, prefill_attention_ref

    tiled = common.load_module("09_flash_attention/online_softmax.py")
    print(common.describe(args))
    mine = None
    if args.mine:
        from workspace import lesson09 as mine
        tiled.online_softmax_step = mine.online_softmax_step        # the trace and the tiled loop call yours
        print("--mine: the online softmax below is YOUR online_softmax_step, and YOUR prefill_attention "
              "runs beside aios's kernels and in the engine (workspace/lesson09.py)")

    common.heading("online softmax, one query row, 8 keys in tiles of 2: the max grows, the past is rescaled")
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.8, -1.2, 2.1, 0.3, -0.5, 3.4, 1.0, 5.2])      # a new max in tiles 1, 2 and 3
    values = torch.randn(8, 2, generator=g)
    rows = [[tile, m_i, alpha, l_i, f"[{o[0]:+.4f}, {o[1]:+.4f}]"]
            for tile, m_i, alpha, l_i, o in tiled.online_softmax_trace(scores, values, 2)]
    print(common.table(["after tile", "running max m_i", "alpha = exp(m_old - m_new)", "running sum l_i",
                        "output so far acc / l_i"], rows))
    exact = scores.softmax(-1) @ values
    print(f"softmax(scores) @ values = [{exact[0]:+.4f}, {exact[1]:+.4f}]  (the last row must equal it)")

    n = 256 if args.quick else 2048
    common.heading(f"one head, {n} tokens, head_dim 64, causal: whole matrix vs 64 x 64 tiles")
    q, k, v = (torch.randn(n, 64, generator=g) for _ in range(3))
    with common.Timer() as t_ref:
        ref, ref_bytes = tiled.attention_reference(q, k, v)
    with common.Timer() as t_tiled:
        out, st = tiled.attention_tiled(q, k, v)
    total_tiles = st["tiles_visited"] + st["tiles_skipped"]
    print(common.table(["attention", "score bytes held at once", "score tiles computed", "seconds", "max |diff|"], [
        ["whole matrix (torch reference)", ref_bytes, total_tiles, t_ref.seconds, "-"],
        ["online softmax, tiled (FlashAttention)", st["score_bytes_held"], st["tiles_visited"], t_tiled.seconds,
         f"{float((out - ref).abs().max()):.1e}"],
    ]))
    print(f"({st['tiles_skipped']} of {total_tiles} tiles lie wholly above the diagonal: never computed. "
          f"The Python tile loop is slow on purpose; in Triton one GPU program runs it per query tile.)")

    common.heading("AIOS's Triton kernels vs their torch references (paged KV cache, GQA 8/4 heads, block 16)"
                   + (" under TRITON_INTERPRET=1" if args.device == "cpu" else ""))
    dev = args.device
    heads, kv_heads, head_dim, block = 8, 4, 64, 16
    seq_lens = [40, 17, 64] if args.device == "cpu" else [1900, 700, 4096]
    blocks_per_seq = [(s + block - 1) // block for s in seq_lens]
    k_cache = torch.randn(sum(blocks_per_seq) + 2, block, kv_heads, head_dim, generator=g).to(dev)
    v_cache = torch.randn(k_cache.shape, generator=g).to(dev)
    perm = torch.randperm(len(k_cache), generator=g).tolist()          # blocks scattered in the pool
    block_tables = torch.full((len(seq_lens), max(blocks_per_seq)), -1, dtype=torch.int32)
    for i, nb in enumerate(blocks_per_seq):
        block_tables[i, :nb] = torch.tensor(perm[sum(blocks_per_seq[:i]): sum(blocks_per_seq[:i]) + nb])
    block_tables = block_tables.to(dev)
    cu = torch.tensor([0] + list(torch.tensor(seq_lens).cumsum(0)), dtype=torch.int32, device=dev)
    scale = head_dim ** -0.5
    qp = torch.randn(int(cu[-1]), heads, head_dim, generator=g).to(dev)
    qd = torch.randn(len(seq_lens), heads, head_dim, generator=g).to(dev)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=dev)
    rows = []
    kernels = [("prefill_attention", prefill_attention, prefill_attention_ref,
                (qp, k_cache, v_cache, cu, cu, max(seq_lens), max(seq_lens), block_tables, scale)),
               ("decode_attention", decode_attention, decode_attention_ref,
                (qd, k_cache, v_cache, block_tables, lens, scale))]
    if mine is not None:
        kernels.insert(1, ("YOUR prefill_attention (torch, tiled)", mine.prefill_attention, prefill_attention_ref,
                           kernels[0][3]))
    for name, fn, ref, fargs in kernels:
        fn(*fargs)                                                      # compile (or interpret) once
        with common.Timer(dev) as t_fn:
            a = fn(*fargs)
        with common.Timer(dev) as t_ref:
            b = ref(*fargs)
        rows.append([name, str(seq_lens), t_ref.seconds * 1000, t_fn.seconds * 1000,
                     f"{float((a.float() - b.float()).abs().max()):.1e}"])
    print(common.table(["kernel", "sequence lengths", "torch ref ms", "Triton ms", "max |diff|"], rows))
    if args.device == "cpu":
        print("(on a CPU the 'Triton ms' column is Triton's interpreter, a numpy emulation: it checks the "
              "kernel's result, not its speed)")

    if mine is not None:
        from aios import LLM, SamplingParams
        from aios.kernels import store_kvcache_ref
        from aios.layers.backend import AttentionBackend, Backend

        common.heading("the engine on YOUR prefill_attention (decode and KV store: aios's references)")
        texts = common.prompts(args, 4)
        params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
        yours = Backend(AttentionBackend("mine", store_kvcache_ref, mine.prefill_attention, decode_attention_ref),
                        fused_kernels=False)
        outs = []
        for backend in (None, yours):
            llm = LLM(args.model, device=args.device, backend=backend, skip_tokenizer_init=args.skip_tokenizer_init)
            outs.append([o["token_ids"] for o in llm.generate(texts, params, use_tqdm=False)])
            llm.close()
        same = "the same as" if outs[0] == outs[1] else "DIFFERENT from"
        print(f"greedy tokens of {len(texts)} prompts x 16 on your prefill_attention: {same} aios's")

    common.heading("the engine: attention_backend torch (lesson 08) vs triton (lesson 09)")
    common.compare_rungs(args, ("08", "09"),
                         lambda llm, lesson: f"attention_backend={llm.config.attention_backend!r} (lesson {lesson})")
    if args.device == "cpu":
        print("(on a CPU both settings run the torch references: Triton kernels run on CUDA tensors only)")


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        while isinstance(e.__context__, NotImplementedError):   # the first stub hit, not a later one
            e = e.__context__
        raise SystemExit(f"{e}\nwrite it in workspace/lesson09.py; check it with: python lessons/check.py 09") from None
