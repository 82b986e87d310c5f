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

The last table splits one MLP (up: column parallel, down: row parallel) over 2 CPU ranks by hand,
with the layers themselves, and compares it with the same MLP on one device.

    --mine : that MLP is built from YOUR ColumnParallelLinear and RowParallelLinear
             (workspace/lesson14.py); the engine above keeps aios's layers (its model builds them)
"""

from __future__ import annotations

from lessons import common

MLP = (64, 256, 64)                          # in, hidden, out features of the hand-split MLP


def mlp_rank(module: str, rank: int, size: int, port: int, results) -> None:
    """One rank of the hand-split MLP: load this rank's shards, run, report (shapes, output)."""
    import importlib
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from aios.distributed.tp_group import TPGroup

    try:
        torch.set_num_threads(1)
        layers = importlib.import_module(module)
        timeout = timedelta(seconds=60)
        store = dist.TCPStore("127.0.0.1", port, size, is_master=False, timeout=timeout)
        tp = TPGroup(rank, size, dist.ProcessGroupGloo(store, rank, size, timeout=timeout))
        g = torch.Generator().manual_seed(0)
        d_in, d_hidden, d_out = MLP
        w_up, w_down, x = (torch.randn(d_hidden, d_in, generator=g), torch.randn(d_out, d_hidden, generator=g),
                           torch.randn(4, d_in, generator=g))
        up = layers.ColumnParallelLinear(d_in, d_hidden, tp=tp)
        down = layers.RowParallelLinear(d_hidden, d_out, tp=tp)
        up.weight.weight_loader(up.weight, w_up)
        down.weight.weight_loader(down.weight, w_down)
        y = down(torch.relu(up(x)))
        want = torch.relu(x @ w_up.T) @ w_down.T
        results.put((rank, tuple(up.weight.shape), tuple(down.weight.shape), float((y - want).abs().max()), None))
    except BaseException as e:                                       # noqa: BLE001  (reported to the parent)
        results.put((rank, None, None, None, f"{type(e).__name__}: {e}"))


def hand_split_mlp(module: str, size: int = 2) -> list[list]:
    """Run mlp_rank on `size` spawned CPU processes over gloo; one row per rank."""
    import multiprocessing

    import torch.distributed as dist

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    store = dist.TCPStore("127.0.0.1", 0, size + 1, is_master=True, wait_for_workers=False)
    procs = [ctx.Process(target=mlp_rank, args=(module, r, size, store.port, results), daemon=True)
             for r in range(size)]
    for p in procs:
        p.start()
    try:
        got = sorted(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for *_, error in got:
        if error and error.startswith("NotImplementedError"):
            raise NotImplementedError(error.removeprefix("NotImplementedError: "))
        if error:
            raise RuntimeError(error)
    return [[f"rank {r}", str(up), str(down), f"{diff:.1e}"] for r, up, down, diff, _ in got]


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--tp", type=int, default=2, help="tensor-parallel size to compare with 1 (default 2)")
    ap.add_argument("--mine", action="store_true",
                    help="split the last table's MLP with your layers (workspace/lesson14.py)")
    args = common.setup(ap.parse_args())
    module = "workspace.lesson14" if args.mine else "aios.layers.linear"
    if args.mine:
        from workspace.lesson14 import ColumnParallelLinear, RowParallelLinear
        ColumnParallelLinear(4, 4), RowParallelLinear(4, 4)          # a stub fails here, before the long runs
        print("--mine: the hand-split MLP (last table) is built from YOUR ColumnParallelLinear and "
              "RowParallelLinear (workspace/lesson14.py)")

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

    d_in, d_hidden, d_out = MLP
    common.heading(f"one MLP ({d_in} -> {d_hidden} -> {d_out}) split by hand over 2 CPU processes (gloo), "
                   f"{'your' if args.mine else 'aios'} layers")
    print(common.table(["", "up: column parallel", "down: row parallel", "max |y - one device|"],
                       hand_split_mlp(module)))
    print(f"(up holds {d_hidden // 2} of the {d_hidden} hidden features per rank and needs no communication; "
          f"down sums the ranks' partial outputs with one all-reduce)")


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        raise SystemExit(f"{e}\nwrite it in workspace/lesson14.py; check it with: python lessons/check.py 14") from None
