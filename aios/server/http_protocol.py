"""uvicorn's HTTP protocol with a header-read timeout: a client has that long to send a request's
headers, from connecting (or from the end of its previous response) to the blank line.

uvicorn has none: its keep-alive timer is cleared by every byte that arrives, so 200 sockets
sending headers a byte at a time (slowloris) were held open for as long as they kept sending, each
one a file descriptor and a protocol object, until the server ran out of them. Here the timer
starts in connection_made and after every response, and stops when uvicorn creates the request's
cycle (that is when its headers are complete, in both of uvicorn's parsers); when it fires the
client gets a 408 and the connection is closed. A request's body and its response are not timed.

    uvicorn.Config(app, http=http_protocol(timeout_header_read=10.0))
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:                           # httptools is optional: uvicorn's "auto" falls back to h11
    HttpToolsProtocol = None

DEFAULT_TIMEOUT_HEADER_READ = 10.0            # seconds

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _HeaderReadTimeout:
    """Mixed in before one of uvicorn's protocol classes; `timeout_header_read` set by http_protocol()."""

    timeout_header_read: float = DEFAULT_TIMEOUT_HEADER_READ
    _header_timer: asyncio.TimerHandle | None = None
    _cycle = None

    @property
    def cycle(self):
        return self._cycle

    @cycle.setter
    def cycle(self, cycle) -> None:           # uvicorn sets a new cycle once a request's headers are in
        if cycle is not None:
            self._stop_header_timer()
        self._cycle = cycle

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.timeout_header_read, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined request whose headers were read already is under way: no timer for it
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._start_header_timer()


def http_protocol(timeout_header_read: float = DEFAULT_TIMEOUT_HEADER_READ) -> type:
    """uvicorn's protocol class (httptools where installed, else h11) with the header-read timeout."""
    if not timeout_header_read > 0:
        raise ValueError(f"timeout_header_read must be > 0 seconds, got {timeout_header_read}")
    base = HttpToolsProtocol or H11Protocol
    return type(f"HeaderTimeout{base.__name__}", (_HeaderReadTimeout, base),
                {"timeout_header_read": float(timeout_header_read)})
