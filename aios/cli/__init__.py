"""The `aios` command: one entry point, a subcommand per job (as `vllm serve`, `vllm bench`).

    aios generate [--model DIR] [--prompt TEXT] ...   text from a prompt, streamed (aios/cli/generate.py)
    aios serve [--model DIR] [--port N] ...           the OpenAI-compatible server (python -m aios.server)
    aios bench [--shape S] [--workload W ...] ...     the offline benchmark (aios/bench/offline.py)

Each subcommand takes --help. pyproject.toml declares `aios = "aios.cli:main"`; in a clone,
`python generate.py`, `python -m aios.server` and `python benchmark.py` run the same code.
"""

from __future__ import annotations

import argparse
import sys

# name -> (what it does, the module whose main(argv) runs it)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate text from a prompt, streamed to the terminal", "aios.cli.generate"),
    "serve": ("serve a model over an OpenAI-compatible HTTP API", "aios.server.__main__"),
    "bench": ("measure offline throughput and latency (and peers side by side)", "aios.bench.offline"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="aios", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="AIOS, an LLM inference engine built lesson by lesson.",
        epilog="commands:\n" + "\n".join(f"  {name:<10}{what}" for name, (what, _) in COMMANDS.items())
        + "\n\n`aios COMMAND --help` lists a command's flags.")
    ap.add_argument("--version", action="version", version=f"aios {_version()}")
    ap.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="generate | serve | bench")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the command's own flags")
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        ap.print_help(sys.stderr)
        return 2
    args = ap.parse_args(argv)
    prog = f"aios {args.command}"
    if args.command == "generate":
        from aios.cli.generate import main as generate
        return generate(args.args, prog=prog)
    if args.command == "serve":
        from aios.utils.optional import require

        # before aios.server is imported (its package imports fastapi): one line, status 2, no traceback
        require("fastapi", "uvicorn", "pydantic", extra="server", needed_by="the server")
        from aios.server.__main__ import main as serve
        return serve(args.args)
    from aios.bench.offline import main as bench
    return bench(args.args, prog=prog)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aios")
    except PackageNotFoundError:                             # a clone, not installed
        import aios
        return aios.__version__
