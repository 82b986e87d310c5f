"""What structured output costs per decode step: JSON-schema-constrained requests against the same
requests unconstrained, at batch 1 and 64 (issue 20), in AIOS and, with --vllm, in vLLM.

    PYTHONPATH=$PWD python benchmarks/structured_output_cost.py --shape qwen3-0.6b --tokenizer DIR [--vllm]
    PYTHONPATH=$PWD python benchmarks/structured_output_cost.py --model /path/to/Qwen3-0.6B

A shape runs random weights (load_format="dummy") with the tokenizer in --tokenizer (a 151,643-token
BPE made by `benchmarks/structured_output_backends.py --train-large-tokenizer DIR` serves when no real
Qwen3 tokenizer is at hand: the mask's cost depends on the vocabulary's size and the grammar, not on
the weights). Each constrained request gets its own random schema (aios/bench/json_schemas.py,
seeded); the unconstrained run gives each request the constrained run's output length with
ignore_eos, so both runs take the same steps. Reported per batch size: mean decode-step time of
each, the difference (the constraint's cost per step), output tok/s. One JSON in benchmarks/results/.
The vLLM side (0.26's `StructuredOutputsParams(json=...)`, xgrammar backend) is written for the GPU
machine and was not run where this script was written (no vLLM there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

PROMPT = "Write the record as JSON. The lord said unto Moses, "


def aios_run(model: str, prompts: list, params: list, **engine) -> dict:
    from aios import LLM
    with LLM(model, **engine) as llm:
        llm.generate(prompts[:1], params[:1], use_tqdm=False)                # warm (compile, graphs)
        seqs = [llm.add_request(p, sp) for p, sp in zip(prompts, params)]
        steps, t0 = 0, time.perf_counter()
        while llm.has_unfinished_requests():
            llm.step()
            steps += 1
        seconds = time.perf_counter() - t0
        outs = [llm.output(s) for s in seqs]
    tokens = sum(len(o["token_ids"]) for o in outs)
    return {"seconds": seconds, "steps": steps, "output_tokens": tokens, "step_ms": seconds / steps * 1e3,
            "output_tok_per_s": tokens / seconds, "lengths": [len(o["token_ids"]) for o in outs],
            "texts": [o["text"] for o in outs]}


def vllm_run(model: str, tokenizer: str, prompts: list, schemas: list | None, lengths: list | None, **kw) -> dict:
    import vllm
    from vllm.sampling_params import StructuredOutputsParams
    llm = vllm.LLM(model=model, tokenizer=tokenizer, **kw)
    if schemas is not None:
        params = [vllm.SamplingParams(temperature=0.6, seed=i, max_tokens=256,
                                      structured_outputs=StructuredOutputsParams(json=s))
                  for i, s in enumerate(schemas)]
    else:
        params = [vllm.SamplingParams(temperature=0.6, seed=i, max_tokens=n, ignore_eos=True)
                  for i, n in enumerate(lengths)]
    llm.generate(prompts[:1], params[:1], use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    lens = [len(o.outputs[0].token_ids) for o in outs]
    del llm
    return {"seconds": seconds, "output_tokens": sum(lens), "output_tok_per_s": sum(lens) / seconds, "lengths": lens,
            "version": vllm.__version__}


def main() -> None:
    from aios.bench.json_schemas import random_schema
    from aios.bench.provenance import gpu_name
    from aios.bench.shapes import write_shape
    from aios.sampling_params import SamplingParams, StructuredOutputsParams

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a real checkpoint directory (with its tokenizer)")
    p.add_argument("--shape", default="qwen3-0.6b", help="a shape of aios/bench/shapes.py, random weights")
    p.add_argument("--tokenizer", help="tokenizer directory for --shape")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--device", default=None)
    p.add_argument("--vllm", action="store_true", help="also run vLLM, same prompts and schemas")
    p.add_argument("--no-async-scheduling", action="store_true", help="AIOS with async scheduling off")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()

    tmp = None
    if args.model:
        model, tokenizer, load_format, shape = args.model, args.model, "auto", os.path.basename(args.model.rstrip("/"))
    else:
        if not args.tokenizer:
            p.error("--shape needs --tokenizer DIR (see the docstring)")
        tmp = tempfile.mkdtemp()
        model = write_shape(args.shape, tmp)
        for name in os.listdir(args.tokenizer):
            if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
                shutil.copy(os.path.join(args.tokenizer, name), model)
        tokenizer, load_format, shape = model, "dummy", args.shape
    engine = dict(load_format=load_format, device=args.device, max_model_len=1024,
                  async_scheduling=not args.no_async_scheduling)
    result: dict = {"engine": "aios", "gpu": gpu_name() or "cpu", "shape": shape, "workload": "json-schema",
                    "config": {k: v for k, v in engine.items() if k != "device"},
                    "description": "random JSON schemas (aios/bench/json_schemas.py), temperature 0.6, seeded; "
                                   "unconstrained run: same output lengths, ignore_eos", "batches": {}}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        schemas = [random_schema(i) for i in range(bs)]
        prompts = [f"{PROMPT}{i}" for i in range(bs)]
        constrained = [SamplingParams(temperature=0.6, seed=i, max_tokens=256,
                                      structured_outputs=StructuredOutputsParams(json=s))
                       for i, s in enumerate(schemas)]
        with_mask = aios_run(model, prompts, constrained, **engine)
        free = [SamplingParams(temperature=0.6, seed=i, max_tokens=n, ignore_eos=True)
                for i, n in enumerate(with_mask["lengths"])]
        without = aios_run(model, prompts, free, **engine)
        valid = 0
        for text, s in zip(with_mask.pop("texts"), schemas):
            try:
                import jsonschema
                jsonschema.validate(json.loads(text), s)
                valid += 1
            except Exception:   # noqa: BLE001 - any failure is an invalid output
                pass
        without.pop("texts")
        row = {"constrained": with_mask, "free": without, "valid": valid,
               "step_ms_added": with_mask["step_ms"] - without["step_ms"]}
        if args.vllm:
            v_with = vllm_run(model, tokenizer, prompts, schemas, None, load_format=load_format)
            v_free = vllm_run(model, tokenizer, prompts, None, v_with["lengths"], load_format=load_format)
            row["vllm"] = {"constrained": v_with, "free": v_free}
        result["batches"][bs] = row
        print(f"batch {bs:3d}: step {without['step_ms']:.2f} ms free, {with_mask['step_ms']:.2f} ms constrained "
              f"(+{row['step_ms_added']:.2f} ms); {with_mask['output_tok_per_s']:.0f} vs "
              f"{without['output_tok_per_s']:.0f} tok/s; valid {valid}/{bs}"
              + (f"; vLLM {row['vllm']['constrained']['output_tok_per_s']:.0f} vs "
                 f"{row['vllm']['free']['output_tok_per_s']:.0f} tok/s" if args.vllm else ""), flush=True)
    os.makedirs(args.out, exist_ok=True)
    sync = "-sync" if args.no_async_scheduling else ""
    name = f"{time.strftime('%Y-%m-%d')}-{result['gpu'].lower().replace(' ', '-')}-{shape}-structured-output{sync}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.join(args.out, name)}")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
