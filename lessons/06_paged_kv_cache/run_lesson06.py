#!/usr/bin/env python
"""Lesson 06: the paged KV cache. Memory in fixed-size blocks, found through a block table.

    contiguous (lesson 05) : each sequence reserves max_model_len positions up front
    paged      (lesson 06) : the engine's BlockManager hands out blocks of kvcache_block_size tokens
                             as a sequence grows; seq.block_table maps its logical blocks to physical
                             ones, and each new token's K/V goes to flat slot
                             slot_mapping = block_table[pos // block_size] * block_size + pos % block_size

From here on the real engine runs (aios.LLM), with lesson 06's settings from aios/bench/ladder.py:
one sequence at a time, torch reference attention, no CUDA graphs, no prefix caching. Block size
16 shows the mechanics; the engine's default (256) is what runs fastest on an H100.
"""

from __future__ import annotations

from lessons import common


def peak_blocks(llm, prompts, params) -> list[tuple[int, int]]:
    """Run each request alone; (its final length, the most blocks it held) for each."""
    out = []
    for p, sp in zip(prompts, params):
        seq = llm.add_request(p, sp)
        peak = 0
        while llm.has_unfinished_requests():
            llm.step()
            peak = max(peak, llm.stats()["kv_blocks_used"])
        out.append((len(seq), peak))
    return out


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--num-prompts", type=int, default=None, help="default 8; 3 with --quick")
    ap.add_argument("--mine", action="store_true",
                    help="run the engine on your BlockManager and slot_mapping (workspace/lesson06.py)")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (3 if args.quick else 8)

    from aios import LLM, Config, SamplingParams
    from aios.bench.ladder import OVERRIDES
    from aios.engine.block_manager import BlockManager

    mine = None
    if args.mine:
        from workspace import lesson06 as mine
        print("--mine: the engine below runs on YOUR BlockManager and slot_mapping (workspace/lesson06.py)")
    block_manager_cls = mine.BlockManager if mine is not None else BlockManager

    loop03 = common.load_module("03_own_the_model/no_cache_loop.py")
    loop04 = common.load_module("04_kv_cache/kv_cache_loop.py")
    loop05 = common.load_module("05_preallocated_kv_cache/static_cache_loop.py")
    print(common.describe(args))
    rung06 = OVERRIDES["06"]
    print(f"engine settings (aios/bench/ladder.py, lesson 06): {rung06}")
    max_tokens = [8, 24, 40, 56, 72, 120, 200, 300][:n] if not args.quick else [8, 20, 40][:n]
    prompts = common.prompts(args, n)
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in max_tokens]
    default_bs = Config.__dataclass_fields__["kvcache_block_size"].default

    common.heading("two sequences side by side, 16-token blocks: block tables and slot mapping")
    llm = LLM(args.model, device=args.device, kvcache_block_size=16, skip_tokenizer_init=args.skip_tokenizer_init,
              block_manager_cls=block_manager_cls, **{**rung06, "max_num_seqs": 2})
    captured = []
    prepare = llm.model_runner.prepare_inputs

    def spy(batch):                           # record what the model runner hands the kernels
        inputs = prepare(batch)
        captured.append(([s.seq_id for s in batch.seqs], [list(s.block_table) for s in batch.seqs], inputs))
        return inputs

    llm.model_runner.prepare_inputs = spy
    llm.generate(prompts[:2], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True), use_tqdm=False)
    del llm.model_runner.prepare_inputs
    for step in (0, 1, len(captured) - 1):
        seq_ids, tables, x = captured[step]
        kind = "prefill" if x.is_prefill else "decode"
        cu = x.cu_seqlens_q.tolist()
        for i, (seq_id, table) in enumerate(zip(seq_ids, tables)):
            pos, slots = x.positions[cu[i]:cu[i + 1]], x.slot_mapping[cu[i]:cu[i + 1]]
            print(f"step {step:2d} ({kind}) seq {'AB'[seq_id]}: block_table {table}  positions {pos.tolist()}  "
                  f"slot_mapping {slots.tolist()}")
            if mine is not None:
                assert mine.slot_mapping(table, pos, 16).tolist() == slots.tolist(), "your slot_mapping differs"
    print("(position p lives in block block_table[p // 16], offset p % 16: the two sequences' blocks interleave, "
          "so A's position 22 is in physical block " f"{captured[-1][1][0][1]}, not block 1)")
    if mine is not None:
        print("(your slot_mapping gave the same slots as the engine's, for every row above)")
    llm.close()
    llm = LLM(args.model, device=args.device, kvcache_block_size=16, skip_tokenizer_init=args.skip_tokenizer_init,
              block_manager_cls=block_manager_cls, **rung06)

    common.heading(f"{n} sequences of different lengths, one at a time: blocks each one held")
    held = {16: peak_blocks(llm, prompts, params)}
    token_bytes = llm.model_runner.block_bytes // 16
    max_model_len = llm.config.max_model_len
    budget_blocks16 = llm.num_kvcache_blocks
    llm.close()
    llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init,
              block_manager_cls=block_manager_cls, **rung06)       # the engine's default block size
    with common.Timer(args.device) as t_engine:
        held[default_bs] = peak_blocks(llm, prompts, params)
    rows = [[i, length, held[16][i][1], held[16][i][1] * 16 - length, held[default_bs][i][1],
             held[default_bs][i][1] * default_bs - length, max_model_len - length]
            for i, (length, _) in enumerate(held[16])]
    print(common.table(["seq", "tokens", "blocks of 16", "idle slots", f"blocks of {default_bs}", "idle slots",
                        f"idle slots, contiguous {max_model_len}"], rows))

    used = sum(length for length, _ in held[16]) * token_bytes
    budget = budget_blocks16 * 16 * token_bytes
    common.heading(f"KV memory for these {n} sequences ({token_bytes:,} bytes per token; "
                   f"a {budget / 2**20:,.0f} MiB cache)")
    rows = [[f"contiguous, {max_model_len} per sequence (lesson 05)", n * max_model_len * token_bytes / 2**20,
             used / 2**20, f"{100 * (1 - used / (n * max_model_len * token_bytes)):.0f}%",
             budget // (max_model_len * token_bytes)]]
    for bs in (16, default_bs):
        reserved = sum(b for _, b in held[bs]) * bs * token_bytes
        rows.append([f"paged, {bs}-token blocks (lesson 06)", reserved / 2**20, used / 2**20,
                     f"{100 * (1 - used / reserved):.0f}%", int(budget // (reserved / n))])
    print(common.table(["KV cache layout", "MiB reserved", "MiB holding tokens", "waste", "such sequences fit"], rows))

    common.heading("the same tokens, and the price of the indirection (one sequence at a time)")
    model = loop03.load(args.model, args.device)
    ids = [llm.tokenize(p) for p in prompts]
    with common.Timer(args.device) as t_loop:
        loop_tokens = []
        for x, sp in zip(ids, params):
            cache = loop05.for_model(model, len(x) + sp.max_tokens)
            loop_tokens.append(loop04.generate_with_cache(model, x, sp.max_tokens, cache, fused_norm=True)[0])
    engine_tokens = [o["token_ids"] for o in llm.generate(ids, params, use_tqdm=False)]
    total = sum(max_tokens)
    print(common.table(["run", "seconds", "tok/s", "same tokens"], [
        ["lesson 05 loop, contiguous cache", t_loop.seconds, total / t_loop.seconds, "-"],
        [f"aios engine, paged cache (lesson 06 settings, blocks of {default_bs})", t_engine.seconds,
         total / t_engine.seconds, "yes" if loop_tokens == engine_tokens else "NO"],
    ]))


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        while isinstance(e.__context__, NotImplementedError):   # the first stub hit, not a later one
            e = e.__context__
        raise SystemExit(f"{e}\nwrite it in workspace/lesson06.py; check it with: python lessons/check.py 06") from None
