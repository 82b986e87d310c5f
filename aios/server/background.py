"""Serve an app from a background thread of this process (a lesson, a test, a notebook)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def serve_in_background(app, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0,
                        timeout_header_read: float | None = None) -> Iterator[str]:
    """Run `app` under uvicorn in a daemon thread (port 0: any free port); yield its base URL, e.g.
    "http://127.0.0.1:54321". On exit the server is asked to stop and the thread joined.
    timeout_header_read: seconds a client has to send its headers (default: http_protocol's)."""
    import uvicorn

    from aios.server.http_protocol import DEFAULT_TIMEOUT_HEADER_READ, http_protocol

    timeout_header_read = DEFAULT_TIMEOUT_HEADER_READ if timeout_header_read is None else timeout_header_read

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           http=http_protocol(timeout_header_read)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(10)
