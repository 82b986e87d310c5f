#!/usr/bin/env python
"""Lesson 07: batching. Many sequences in one forward pass, described by cu_seqlens and a Context.

    one at a time   (lesson 06) : max_num_seqs=1, each request runs alone
    static batches  (lesson 07) : static_batching=True: all waiting requests start together, their
                                  tokens concatenated into ONE flat batch (no padding); cu_seqlens_q
                                  marks where each sequence's tokens start. New requests wait until
                                  the whole batch is done (lesson 08 lifts that).

Settings from aios/bench/ladder.py (lessons 06 and 07). The greedy tokens must not change.
"""

from __future__ import annotations

from lessons import common


def run(llm, prompts, params) -> tuple[list[list[int]], int, float, list]:
    """Generate; return (tokens, engine steps, seconds, (positions, Context) of every step)."""
    captured = []
    model = llm.model_runner.model
    forward = model.forward

    def spy(input_ids, positions, context):   # record what the model (and its kernels) receive
        captured.append((positions.tolist(), context))
        return forward(input_ids, positions, context)

    model.forward = spy
    try:
        with common.Timer(llm.config.device) as t:
            outs = llm.generate(prompts, params, use_tqdm=False)
    finally:
        del model.forward
    return [o["token_ids"] for o in outs], len(captured), t.seconds, captured


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--num-prompts", type=int, default=None, help="default 16; 4 with --quick")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 64; 8 with --quick")
    ap.add_argument("--mine", action="store_true",
                    help="the static batch runs on your prepare_step_inputs (workspace/lesson07.py)")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (4 if args.quick else 16)
    max_tokens = args.max_tokens or (8 if args.quick else 64)

    from aios import LLM, SamplingParams
    from aios.bench.ladder import OVERRIDES

    print(common.describe(args))
    mine = None
    if args.mine:
        from workspace import lesson07 as mine
        print("--mine: the static batch (lesson 07) runs on YOUR prepare_step_inputs (workspace/lesson07.py)")
    prompts = common.prompts(args, n)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    results = {}
    for lesson, label in (("06", "one at a time (lesson 06)"), ("07", "static batch (lesson 07)")):
        llm = LLM(args.model, device=args.device, skip_tokenizer_init=args.skip_tokenizer_init, **OVERRIDES[lesson])
        if mine is not None and lesson == "07":
            # no seam for the step's inputs: this engine's model runner calls yours instead of aios's
            llm.model_runner.prepare_inputs = lambda batch, bs=llm.config.kvcache_block_size: \
                mine.prepare_step_inputs(batch, bs, {})
        llm.generate(prompts[:1], SamplingParams(max_tokens=2), use_tqdm=False)          # warm-up
        results[lesson] = (label, *run(llm, prompts, params))
        llm.close()

    common.heading(f"{n} prompts x {max_tokens} tokens, greedy")
    total = n * max_tokens
    rows = []
    for lesson, (label, tokens, steps, seconds, _) in results.items():
        same = "-" if lesson == "06" else ("yes" if tokens == results["06"][1] else "NO")
        rows.append([label, steps, total / steps, seconds, total / seconds, same])
    print(common.table(["engine", "steps", "new tokens per step", "seconds", "tok/s", "same tokens"], rows))

    steps = results["07"][4]
    show = min(n, 3)
    common.heading(f"the Context of the first two steps of the static batch (first {show} sequences shown)")
    for positions, c in steps[:2]:
        q = c.cu_seqlens_q[: show + 1].tolist() if c.cu_seqlens_q is not None else list(range(show + 1))
        print(f"{'prefill' if c.is_prefill else 'decode'}: {len(positions)} tokens of {len(c.context_lens)} "
              f"sequences in one flat batch, is_prefill={c.is_prefill}")
        if c.is_prefill:
            print(f"  cu_seqlens_q  {q}  (sequence s owns tokens cu_seqlens_q[s] .. cu_seqlens_q[s+1]-1)")
            print(f"  cu_seqlens_k  {c.cu_seqlens_k[: show + 1].tolist()}  max_seqlen_q {c.max_seqlen_q}  "
                  f"max_seqlen_k {c.max_seqlen_k}")
        print(f"  positions     {positions[: q[-1]]}")
        print(f"  slot_mapping  {c.slot_mapping[: q[-1]].tolist()}")
        print(f"  context_lens  {c.context_lens[:show].tolist()}  block_tables {c.block_tables[:show].tolist()}")


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        while isinstance(e.__context__, NotImplementedError):   # the first stub hit, not a later one
            e = e.__context__
        raise SystemExit(f"{e}\nwrite it in workspace/lesson07.py; check it with: python lessons/check.py 07") from None
