"""What every peer runner shares: rebuild the workload from its name, time it, print one JSON line."""

from __future__ import annotations

import argparse
import json

from aios.bench import workloads


def workload_from_args(args: argparse.Namespace) -> workloads.Workload:
    return workloads.by_name(args.workload, num_seqs=args.num_seqs, input_len=args.input_len,
                             output_len=args.output_len, seed=args.seed, vocab=args.vocab)


def peer_arg_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", required=True, help="checkpoint dir (config.json; weights optional: random)")
    ap.add_argument("--workload", default="standard")
    ap.add_argument("--num-seqs", type=int, default=256)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=10000, help="prompt token ids are drawn from [0, vocab)")
    ap.add_argument("--limit", type=int, default=None, help="run only the first N sequences")
    return ap


def emit(result: dict) -> None:
    print("PEER_RESULT " + json.dumps(result), flush=True)
