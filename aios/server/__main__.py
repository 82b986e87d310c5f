"""Command line: load a model, then serve it over an OpenAI-compatible HTTP API.

    python -m aios.server                                    # the bundled default model
    python -m aios.server --model /path/to/Qwen3-0.6B --port 8000
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "In the beginning", "max_tokens": 32, "stream": true}'

    # a checkpoint without tokenizer files (random weights, for benchmarks): token-id prompts only,
    # every choice carries "token_ids" and an empty text
    python -m aios.server --model DIR --skip-tokenizer-init [--load-format dummy]

The engine runs in a process of its own (aios/server/engine_process.py), this one parses HTTP and
writes the streams. SIGINT / SIGTERM shut down gracefully: uvicorn stops accepting, lets requests in
flight finish (up to --shutdown-timeout seconds), the engine's process stops and frees the GPU, and
this process exits with status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys

from aios.utils.optional import require

require("fastapi", "uvicorn", "pydantic", extra="server", needed_by="the server")
import uvicorn  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import os

    from aios.server.async_engine import DEFAULT_MAX_STREAM_BACKLOG
    from aios.server.guards import DEFAULT_MAX_REQUEST_BYTES
    from aios.server.http_protocol import DEFAULT_TIMEOUT_HEADER_READ

    ap = argparse.ArgumentParser(prog="python -m aios.server", description=__doc__.split("\n\n")[0])
    srv = ap.add_argument_group("server")
    srv.add_argument("--model", default=None,
                     help="a HuggingFace checkpoint directory: Qwen3, Qwen3-MoE, Llama 3, Qwen2/2.5, Mistral or "
                          "Gemma 3 text (default: the bundled model)")
    srv.add_argument("--served-model-name", default=None,
                     help="the name clients pass as `model` (default: the model directory's name)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on; 0.0.0.0: every interface (default: %(default)s)")
    srv.add_argument("--port", type=int, default=8000,
                     help="port to listen on; 0: any free port (default: %(default)s)")
    srv.add_argument("--max-waiting", type=int, default=512,
                     help="sequences that may wait for the batch; past it requests get 429 + Retry-After "
                          "(default: %(default)s)")
    srv.add_argument("--shutdown-timeout", type=float, default=10.0,
                     help="seconds requests in flight get to finish after SIGINT/SIGTERM (default: %(default)s)")
    srv.add_argument("--stream-interval", type=int, default=1, metavar="N",
                     help="tokens per streamed chunk (the first token is sent at once; default: 1). Each "
                          "chunk costs the server's event loop ~60 us: under heavy load a few tokens per "
                          "chunk leave more of it for the engine")
    srv.add_argument("--max-stream-backlog", type=int, default=DEFAULT_MAX_STREAM_BACKLOG, metavar="N",
                     help="events per choice a client may leave unread (a stalled reader); past it its request "
                          "is aborted and its KV blocks freed (default: %(default)s)")
    srv.add_argument("--api-key", default=None,
                     help="clients of /v1/* must send 'Authorization: Bearer KEY' (else 401); /health and "
                          "/metrics stay open (default: the environment's AIOS_API_KEY, else no key)")
    srv.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
                     help="largest request body; past it 413, before the body is parsed (default: %(default)s)")
    srv.add_argument("--timeout-header-read", type=float, default=DEFAULT_TIMEOUT_HEADER_READ, metavar="S",
                     help="seconds a client has to send a request's headers (slowloris); then 408 and the "
                          "connection is closed (default: %(default)s)")
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                     help="uvicorn's log level (default: %(default)s)")
    eng = ap.add_argument_group("engine (default: aios.Config's)")
    eng.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    eng.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: checkpoint's; "
                                                   "float32 on CPU)")
    eng.add_argument("--max-model-len", type=int, default=None, help="prompt + output tokens of one sequence")
    eng.add_argument("--max-num-seqs", type=int, default=None, help="sequences in one step")
    eng.add_argument("--max-num-batched-tokens", type=int, default=None, help="token budget of one step")
    eng.add_argument("--kvcache-block-size", type=int, default=None, help="tokens per KV block")
    eng.add_argument("--num-kvcache-blocks", type=int, default=None, help="default: sized from memory")
    eng.add_argument("--tp", type=int, default=None, help="tensor-parallel size")
    eng.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    eng.add_argument("--no-prefix-caching", action="store_true", help="turn prefix caching off")
    eng.add_argument("--cudagraph-mixed-tokens", type=int, default=None, metavar="N",
                     help="steps holding prefill tokens, up to N tokens, replay CUDA graphs too "
                          "(Config.cudagraph_mixed_tokens; 0: they run eagerly; default: the engine's, 512 on a GPU)")
    eng.add_argument("--skip-tokenizer-init", action="store_true",
                     help="load no tokenizer: prompts must be token ids, responses carry token_ids and no text")
    eng.add_argument("--load-format", default=None, choices=["auto", "dummy"],
                     help="auto: the checkpoint's safetensors; dummy: random weights (default: auto)")
    args = ap.parse_args(argv)
    if args.stream_interval < 1:
        ap.error(f"--stream-interval must be >= 1, got {args.stream_interval}")
    if args.max_stream_backlog < 1:
        ap.error(f"--max-stream-backlog must be >= 1, got {args.max_stream_backlog}")
    if not args.timeout_header_read > 0:
        ap.error(f"--timeout-header-read must be > 0, got {args.timeout_header_read}")
    if args.max_request_bytes < 1:
        ap.error(f"--max-request-bytes must be >= 1, got {args.max_request_bytes}")
    # from the environment here, not as the flag's default: --help must not print a secret
    args.api_key = args.api_key or os.environ.get("AIOS_API_KEY") or None
    return args


def engine_kwargs(args: argparse.Namespace) -> dict:
    """Only the flags given, so aios.Config's defaults stay the defaults."""
    kwargs = {"max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
              "max_num_batched_tokens": args.max_num_batched_tokens,
              "kvcache_block_size": args.kvcache_block_size, "num_kvcache_blocks": args.num_kvcache_blocks,
              "tensor_parallel_size": args.tp, "load_format": args.load_format,
              "cudagraph_mixed_tokens": args.cudagraph_mixed_tokens}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if args.enforce_eager:
        kwargs["enforce_eager"] = True
    if args.no_prefix_caching:
        kwargs["enable_prefix_caching"] = False
    if args.skip_tokenizer_init:
        kwargs["skip_tokenizer_init"] = True
    return kwargs


class Server(uvicorn.Server):
    """uvicorn's server, printing the URL once it really listens (the model is loaded by then)."""

    def __init__(self, config: uvicorn.Config, model_name: str) -> None:
        super().__init__(config)
        self.model_name = model_name

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"AIOS serving {self.model_name!r} at http://{host}:{port}/v1 "
                  f"(health: /health, metrics: /metrics; Ctrl-C stops)", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help is instant
    from aios.server.app import create_app
    from aios.server.async_engine import AsyncEngine
    from aios.server.http_protocol import http_protocol

    kwargs = dict(device=args.device, dtype=args.dtype, **engine_kwargs(args))
    try:
        # the engine in a process of its own: it does not share this process's GIL with the event loop
        async_engine = AsyncEngine.in_process(args.model, kwargs, args.max_waiting, args.stream_interval,
                                              args.max_stream_backlog)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        app = create_app(async_engine, served_model_name=args.served_model_name, api_key=args.api_key,
                         max_request_bytes=args.max_request_bytes)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                timeout_graceful_shutdown=args.shutdown_timeout,
                                http=http_protocol(args.timeout_header_read))
        server = Server(config, app.state.model_name)
        # uvicorn handles SIGINT/SIGTERM while it runs, then re-raises the signal into the handlers
        # that were there before it: make those a no-op, so a graceful stop ends with status 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server.run()
    finally:
        async_engine.shutdown()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
