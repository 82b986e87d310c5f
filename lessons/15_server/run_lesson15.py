#!/usr/bin/env python
"""Lesson 15: an OpenAI-compatible HTTP server, streaming tokens as Server-Sent Events.

    offline (lesson 14) : LLM.generate(prompts): one Python call owns the engine loop
    server  (lesson 15) : python -m aios.server: HTTP requests arrive at any time, an engine loop
                          in a process of its own (EngineLoop) runs one continuous batch for all of
                          them, and each client reads its tokens as they are made (SSE)

The server runs as `python -m aios.server` on a free port, in its own process as a user runs it;
the clients are the official `openai` package and raw `httpx`. Greedy outputs over HTTP must equal
the offline ones.

    --mine : rebuild the raw stream below from its pieces with YOUR stream_events and
             ResponseBuilder (workspace/lesson15.py), and compare the bytes with the server's
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lessons import common

REPO = Path(__file__).resolve().parents[2]


async def stream_all(url: str, model: str, prompts: list, max_tokens: int) -> tuple[list[dict], float]:
    """Send every prompt at once as a streamed completion; per request: text, token ids, TTFT.
    `return_token_ids` (a vLLM extension) puts each chunk's token ids beside its text."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    async def one(prompt) -> dict:
        start = time.perf_counter()
        text, ttft, token_ids, usage = "", None, [], 0
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True, "return_token_ids": True})
        async for chunk in stream:
            if chunk.choices:
                ids = getattr(chunk.choices[0], "token_ids", None) or []
                if ids and ttft is None:
                    ttft = time.perf_counter() - start
                text += chunk.choices[0].text
                token_ids += ids
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return {"text": text, "token_ids": token_ids, "ttft_s": ttft, "tokens": usage}

    start = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    return list(results), time.perf_counter() - start


@contextlib.contextmanager
def server_process(args) -> Iterator[str]:
    """`python -m aios.server` in its own process, as a user runs it: yields its base URL once it
    listens; SIGINT (a graceful stop) at the end. Its own processes mean their own GILs: the clients
    below take no turns with the server's event loop or its engine."""
    cmd = [sys.executable, "-m", "aios.server", "--model", args.model, "--device", args.device, "--port", "0",
           "--max-model-len", "1024", "--log-level", "warning"]
    if args.skip_tokenizer_init:
        cmd.append("--skip-tokenizer-init")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))          # the same CPU threads as offline
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while "AIOS serving" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                sys.exit(f"error: the server exited with status {proc.returncode}: {' '.join(cmd)}")
        yield line.split(" at ", 1)[1].split()[0].removesuffix("/v1")  # "AIOS serving 'm' at http://h:p/v1 ..."
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def rebuild(module: str, events: list[str]) -> bool:
    """Rebuild a text-completion stream's events (as its SSE lines, without the blank lines) with
    `module`'s ResponseBuilder and stream_events, from the Deltas they carry; True if byte-equal."""
    import importlib
    import time as time_module
    import uuid
    from unittest import mock

    from aios.server.stream import Delta

    mine = importlib.import_module(module)
    bodies = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    include_usage = "usage" in bodies[-1]
    usage = bodies[-1]["usage"] if include_usage else {"prompt_tokens": 0, "completion_tokens": 0}
    deltas = [Delta(c["index"], c["text"], c.get("token_ids", []), c["finish_reason"],
                    num_output_tokens=usage["completion_tokens"] if c["finish_reason"] else 0)
              for b in bodies for c in b["choices"]]
    with mock.patch.object(uuid, "uuid4", lambda: uuid.UUID(hex=bodies[0]["id"].split("-", 1)[1])), \
            mock.patch.object(time_module, "time", lambda: float(bodies[0]["created"])):
        builder = mine.ResponseBuilder(bodies[0]["model"], chat=False, return_token_ids="token_ids" in
                                       bodies[0]["choices"][0])
    rebuilt = mine.stream_events(builder, deltas, usage["prompt_tokens"], include_usage)
    return rebuilt == [e + "\n\n" for e in events]


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--num-prompts", type=int, default=None, help="concurrent requests (default 16; 4 with --quick)")
    ap.add_argument("--mine", action="store_true",
                    help="rebuild the raw stream with your stream_events (workspace/lesson15.py)")
    args = common.setup(ap.parse_args())
    n = args.num_prompts or (4 if args.quick else 16)
    max_tokens = 8 if args.quick else 64

    try:
        import httpx
        import openai  # noqa: F401
        import uvicorn  # noqa: F401

        import aios.server  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED: the server needs fastapi, uvicorn, httpx and openai ({e}); "
              f"pip install -r lessons/15_server/requirements.txt")
        return
    from aios import LLM, SamplingParams

    if args.mine:
        from workspace.lesson15 import sse
        sse({})                                # a stub fails here, before the server starts
        print("--mine: the raw stream below is rebuilt with YOUR stream_events (workspace/lesson15.py)")
    print(common.describe(args))
    llm = LLM(args.model, device=args.device, max_model_len=1024, skip_tokenizer_init=args.skip_tokenizer_init)
    prompts = common.prompts(args, n)          # token ids when the checkpoint has no tokenizer
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(prompts[:1], SamplingParams(max_tokens=2), use_tqdm=False)               # warm-up
    with common.Timer(args.device) as t_offline:
        offline = llm.generate(prompts, params, use_tqdm=False)
    llm.close()                                # the server's engine gets the memory (the GPU's KV cache)

    with server_process(args) as url:
        common.heading(f"the server: {url}/v1  (python -m aios.server, its own process)")
        models = httpx.get(f"{url}/v1/models").json()
        name = models["data"][0]["id"]
        print(f"GET /v1/models -> {[m['id'] for m in models['data']]}")
        body = {"model": name, "prompt": prompts[0], "max_tokens": 4, "temperature": 0, "stream": True}
        print(f"POST /v1/completions {body}  ->  (raw Server-Sent Events)")
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            events = [line for line in r.iter_lines() if line]
        print(f"  {events[0]}")                                      # the first event whole, then only its changes
        for line in events[1:]:
            if line.startswith("data: {"):
                print(f"  data: {{..., \"choices\": {json.dumps(json.loads(line[6:])['choices'])}}}")
            else:
                print(f"  {line}")
        if args.mine:
            same = rebuild("workspace.lesson15", events)
            print(f"your stream_events rebuilt these {len(events)} events byte for byte: {'yes' if same else 'NO'}")

        asyncio.run(stream_all(url, name, prompts[:1], 2))                                 # warm-up
        online, seconds = asyncio.run(stream_all(url, name, prompts, max_tokens))
        total = n * max_tokens
        ttft_offline = sum(o["metrics"]["ttft_s"] for o in offline) / n
        ttft_online = sum(o["ttft_s"] for o in online) / n
        same = all(a["token_ids"] == b["token_ids"] and a["text"] == b["text"] for a, b in zip(offline, online))
        common.heading(f"{n} requests x {max_tokens} tokens, greedy: offline vs {n} concurrent HTTP streams")
        print(common.table(["engine", "seconds", "tok/s", "mean TTFT ms", "output tokens", "same tokens"], [
            ["offline LLM.generate (lesson 14)", t_offline.seconds, total / t_offline.seconds, 1000 * ttft_offline,
             sum(len(o["token_ids"]) for o in offline), "-"],
            ["HTTP server, streamed (lesson 15)", seconds, total / seconds, 1000 * ttft_online,
             sum(o["tokens"] for o in online), "yes" if same else "NO"],
        ]))
        metrics = httpx.get(f"{url}/metrics").text.splitlines()
        print("\nGET /metrics (first lines):")
        for line in [m for m in metrics if m and not m.startswith("#")][:6]:
            print(f"  {line}")


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        raise SystemExit(f"{e}\nwrite it in workspace/lesson15.py; check it with: python lessons/check.py 15") from None
