#!/usr/bin/env python
"""Lesson 14: tensor parallelism. One model split across N devices, one all-reduce per block.

    TP=1 (lesson 13) : one process holds every weight
    TP=2 (lesson 14) : tensor_parallel_size=2: rank 0 (this process) and one spawned worker each
                       hold half of every attention head group and half of the MLP; after each
                       row-parallel matmul (o_proj, down_proj) the ranks all-reduce their partial
                       sums. gloo on a CPU, NCCL on GPUs (aios/distributed/)

The greedy tokens must not change. On a CPU the two ranks share the same cores and talk through
sockets, so TP=2 is slower: here the point is correctness and the mechanics; on GPUs TP buys
memory (a model too big for one card) and bandwidth (each card reads half the weights per step).
"""

from __future__ import annotations

from lessons import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--tp", type=int, default=2, help="tensor-parallel size to compare with 1 (default 2)")
    args = common.setup(ap.parse_args())

    from aios import LLM, SamplingParams

    try:
        from aios.distributed.launcher import create_tp_runner  # noqa: F401  (present = TP is built)
        from aios.distributed.tp_group import TPGroup
    except ImportError as e:
        print(f"SKIPPED: tensor parallelism is not available in this aios ({e}); see aios/distributed/")
        return
    if args.device == "cuda":
        import torch
        if torch.cuda.device_count() < args.tp:
            print(f"SKIPPED: --tp {args.tp} needs {args.tp} GPUs, torch sees {torch.cuda.device_count()}; "
                  f"run with --device cpu to see TP over gloo")
            return

    print(common.describe(args))
    n, max_tokens = (2, 8) if args.quick else (8, 64)
    prompts = common.prompts(args, n)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

    calls = {"all_reduce": 0, "all_gather": 0}
    all_reduce, all_gather = TPGroup.all_reduce, TPGroup.all_gather_last_dim

    def counting_all_reduce(self, x):
        calls["all_reduce"] += self.size > 1
        return all_reduce(self, x)

    def counting_all_gather(self, x):
        calls["all_gather"] += self.size > 1
        return all_gather(self, x)

    rows, shards, tokens = [], [], {}
    for tp in (1, args.tp):
        with common.Timer() as t_start:
            llm = LLM(args.model, device=args.device, tensor_parallel_size=tp,
                      skip_tokenizer_init=args.skip_tokenizer_init)
        try:
            llm.generate(prompts[:1], SamplingParams(max_tokens=2), use_tqdm=False)      # warm-up
            with common.Timer(args.device) as t:
                outs = llm.generate(prompts, params, use_tqdm=False)
            tokens[tp] = [o["token_ids"] for o in outs]
            # count rank 0's collectives over one decode step
            TPGroup.all_reduce, TPGroup.all_gather_last_dim = counting_all_reduce, counting_all_gather
            try:
                seq = llm.add_request(prompts[0], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))
                llm.step()                                                             # prefill
                before = dict(calls)
                llm.step()                                                             # one decode step
                per_step = {k: calls[k] - before[k] for k in calls}
                while not seq.is_finished:
                    llm.step()
            finally:
                TPGroup.all_reduce, TPGroup.all_gather_last_dim = all_reduce, all_gather
            layer = llm.model_runner.model.model.layers[0]
            shape = [tuple(m.weight.shape) for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                                                     layer.mlp.gate_up_proj, layer.mlp.down_proj)]
            shards.append([f"TP={tp}", *map(str, shape), layer.self_attn.num_heads, layer.self_attn.num_kv_heads])
            same = "-" if tp == 1 else ("yes" if tokens[tp] == tokens[1] else "NO")
            rows.append([f"tensor_parallel_size={tp}", t_start.seconds, t.seconds, n * max_tokens / t.seconds,
                         per_step["all_reduce"], per_step["all_gather"], same])
        finally:
            llm.close()

    common.heading(f"{n} prompts x {max_tokens} tokens, greedy")
    print(common.table(["engine", "start-up s", "seconds", "tok/s", "all-reduces per step", "all-gathers per step",
                        "same tokens"], rows))
    common.heading("rank 0's shard of layer 0 (weight shapes are [out_features, in_features])")
    print(common.table(["", "qkv_proj", "o_proj", "gate_up_proj", "down_proj", "query heads", "KV heads"], shards))


if __name__ == "__main__":
    main()
