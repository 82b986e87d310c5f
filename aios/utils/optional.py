"""Optional dependencies: a missing one is one line naming what to install, not a traceback.

The engine needs only the core requirements; the HTTP server needs the `server` extra
(fastapi, uvicorn, pydantic). A command that needs an extra calls `require` before importing it:

    require("fastapi", "uvicorn", "pydantic", extra="server", needed_by="the server")
    import uvicorn

and, with uvicorn missing, prints
`error: the server needs fastapi, uvicorn and pydantic (uvicorn is not installed): pip install 'aios[server]'`
and exits with status 2 (a usage error, as argparse's).
"""

from __future__ import annotations

import importlib.util
import sys


def missing(*modules: str) -> list[str]:
    """The modules of `modules` that are not installed (or blocked: None in sys.modules). Looks them
    up without importing them, so a command's --help stays fast."""
    out = []
    for name in modules:
        try:
            found = sys.modules[name] is not None if name in sys.modules else importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def _names(items: tuple[str, ...] | list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def message(modules: tuple[str, ...], absent: list[str], extra: str, needed_by: str) -> str:
    verb = "is" if len(absent) == 1 else "are"
    return (f"error: {needed_by} needs {_names(modules)} ({_names(absent)} {verb} not installed): "
            f"pip install 'aios[{extra}]' (from a clone: pip install -e '.[{extra}]' or -r requirements.txt)")


def require(*modules: str, extra: str, needed_by: str) -> None:
    """Exit with status 2 and one line on stderr if any of `modules` does not import."""
    absent = missing(*modules)
    if absent:
        print(message(modules, absent, extra, needed_by), file=sys.stderr)
        raise SystemExit(2)
