"""HTTP hardening shared by the demo's app: headers on every answer, content types, server limits."""

from __future__ import annotations

import json
from collections.abc import Iterable

from fastapi.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_S = 10.0  # a request's head (request line and headers) must arrive within this
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together
MAX_CONNECTIONS_PER_CLIENT = 64  # open connections from one IP address


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks, each enforced before the app runs:

    - a request head (request line and headers) over `max_head_bytes` is answered 431 and the
      connection closed, counting the bytes as they arrive (uvicorn's `h11_max_incomplete_event_size`
      applies to its h11 protocol only, and httptools buffers whatever it is fed);
    - a head that has not arrived within `head_timeout_s` of the connection or of its first byte
      closes the connection: a client sending its headers a byte at a time (slowloris) cannot hold
      one (uvicorn's own timeouts cover idle keep-alive connections only);
    - at most `max_connections_per_client` connections from one IP address at once; one more is
      answered 503 and closed, so that one client cannot take every connection (uvicorn's
      `limit_concurrency` then answers 503 to everyone, health checks included).

    And one saving: what is written to a connection in one turn of the event loop leaves in one send
    (`CoalescedWrites`: a response's head and body, which uvicorn writes apart).
    """

    head_timeout_s: float = HEAD_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's Transport
        super().connection_made(transport)
        # every write of the connection (the response cycles', the refusals here) goes through it, in order
        self.transport = CoalescedWrites(transport, self.loop)
        self._head_timer = None
        self._head_bytes = 0  # bytes of the current request's head so far; None once it is complete
        self._heads_done = 0
        counts = self._client_counts()
        self._ip = self.client[0] if self.client else None
        if self._ip is not None:
            counts[self._ip] = counts.get(self._ip, 0) + 1
            if counts[self._ip] > self.max_connections_per_client:
                self._refuse(503, "Service Unavailable",
                             f"too many connections from your address (at most {self.max_connections_per_client})")
                return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:  # in a body, or between requests after a complete one
            super().data_received(data)
            return
        allowed = self.max_head_bytes - self._head_bytes
        if len(data) <= allowed:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # feed only what the limit allows: either the head completes within it, or 431
        heads = self._heads_done
        super().data_received(data[:allowed])
        if self.transport.is_closing():
            return
        if self._heads_done > heads:
            self.data_received(data[allowed:])  # a body, or the next request's head (counted again)
        else:
            self._refuse(431, "Request Header Fields Too Large",
                         f"request line and headers over {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_bytes is None:
            self._head_bytes = 0
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._heads_done += 1
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # what comes next is the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if getattr(self, "_ip", None) is not None:
            counts = self._client_counts()
            counts[self._ip] -= 1
            if counts[self._ip] <= 0:
                del counts[self._ip]
            self._ip = None
        super().connection_lost(exc)

    def _client_counts(self) -> dict[str, int]:
        """Open connections per client address, shared by the server's connections."""
        counts = getattr(self.server_state, "nnlab_connections_per_ip", None)
        if counts is None:
            counts = self.server_state.nnlab_connections_per_ip = {}
        return counts

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self._cancel_head_timer()
        body = b'{"detail": "' + detail.encode() + b'"}'
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"x-content-type-options: nosniff\r\nconnection: close\r\n\r\n%s"
                             % (status, reason.encode(), len(body), body))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class CoalescedWrites:
    """A connection's transport as `GuardedProtocol` and its response cycles see it: what is written in one turn
    of the event loop leaves in one send, in order. uvicorn writes a response's head and its body apart, and
    each send is a system call and, on loopback, the receiver's side of TCP too; closing sends what is pending."""

    def __init__(self, transport, loop) -> None:  # noqa: ANN001 - asyncio's Transport and loop
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


HeadTimeoutProtocol = GuardedProtocol  # its former name

# uvicorn settings of `serve`: idle keep-alive connections closed after 5 s, the limits of GuardedProtocol,
# at most 256 connections at once (503 beyond); h11's head limit too, should h11 be chosen instead; no
# WebSocket upgrades (the demos have none, and an upgraded connection would leave GuardedProtocol's count).
UVICORN_LIMITS = {"timeout_keep_alive": 5, "h11_max_incomplete_event_size": MAX_HEAD_BYTES, "limit_concurrency": 256,
                  "http": GuardedProtocol, "ws": "none"}


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header says JSON (`application/json`, parameters allowed)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class SecurityHeaders:
    """ASGI middleware: `X-Content-Type-Options: nosniff`, the CSP and `Referrer-Policy` on every
    HTTP response (errors and static files included), unless the app set them already."""

    def __init__(self, app, csp: str) -> None:
        self.app = app
        self.extra = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", csp.encode()),
                      (b"referrer-policy", b"no-referrer")]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """ASGI middleware: 400 for a request with more than one Host header (RFC 9112 section 3.2: a
    second one could name another site than the one checked), and, with `allowed_hosts`, for one
    whose Host (without its port) is not among them; `*.example.org` allows the subdomains, `*` any."""

    def __init__(self, app, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.allowed = [h.lower() for h in allowed_hosts or ()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [v for k, v in scope["headers"] if k == b"host"]
            problem = None
            if len(hosts) > 1:
                problem = "more than one Host header"
            elif self.allowed and not self._allowed(hosts[0].decode("latin-1") if hosts else ""):
                problem = "Invalid host header"
            if problem is not None:
                if scope["type"] == "http":
                    await send_json(send, 400, {"detail": problem})
                else:
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)

    def _allowed(self, host: str) -> bool:
        host = host.lower()
        host = host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":", 1)[0]
        return any(p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:])) for p in self.allowed)


async def send_json(send, status: int, payload: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer a request from ASGI middleware: `payload` as JSON, and close the connection."""
    await send_json_bytes(send, status, json.dumps(payload).encode(), [(b"connection", b"close"), *headers])


async def send_json_bytes(send, status: int, data: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send an encoded JSON answer over ASGI (start and body), with `headers` after the content headers."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


async def request_error(request, exc) -> JSONResponse:  # noqa: ANN001 - FastAPI's handler signature
    """FastAPI's request-parameter errors (a query parameter that is not a number, ...) in the app's error
    shape: one line in "detail" (`top_k: Input should be a valid integer (got 'abc')`), each in "errors"."""
    messages = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "header", "body"))
        shown = repr(error.get("input"))
        got = f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})" if "input" in error else ""
        messages.append(f"{where or 'request'}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}"
                        f"{got}")
    return JSONResponse({"detail": "; ".join(messages[:5]), "errors": messages[:50]}, status_code=422)
