"""What one client may cost the others, checked before a route runs: an ASGI middleware.

- `api_key`: every /v1/* request must carry `Authorization: Bearer <key>` (compared in constant
  time); else 401. /health and /metrics stay open (load balancers, Prometheus).
- `max_request_bytes`: a body larger than this is a 413 before it is parsed: at once from its
  Content-Length, or, for a chunked body, as soon as the bytes read pass the bound. The body is
  read here (it would be read whole by the route anyway) and replayed to the app.

Both answer with an OpenAI error body, and `on_error(status)` counts them (/metrics).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

DEFAULT_MAX_REQUEST_BYTES = 8 * 2**20       # a 40,960-token prompt as token ids is ~300 KB


class Guards:
    def __init__(self, app, *, api_key: str | None, max_request_bytes: int,
                 on_error: Callable[[int], None] = lambda status: None) -> None:
        if max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
        self.app, self.on_error = app, on_error
        self.max_request_bytes = max_request_bytes
        self._expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])      # lower-case names (ASGI)
        if self._expected is not None and scope["path"].startswith("/v1"):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
                return await self._error(send, 401, "invalid or missing API key: send the header "
                                                    "'Authorization: Bearer <key>'", "invalid_api_key")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_request_bytes:
            return await self._too_large(send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return                        # the client left while sending
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_request_bytes:
                return await self._too_large(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()            # then what the server says next: a disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        await self._error(send, 413, f"the request body is larger than {self.max_request_bytes} bytes "
                                     "(--max-request-bytes)", "request_too_large")

    async def _error(self, send, status: int, message: str, code: str) -> None:
        self.on_error(status)
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": code}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.append((b"connection", b"close"))         # the body, or the rest of it, is not read
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
