"""HTTP hardening shared by the demo's app: headers on every answer, content types, server limits."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_S = 10.0  # a request's head (request line and headers) must arrive within this


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head does not arrive within
    HEAD_TIMEOUT_S of the connection or of the request's first byte: a client that sends its headers
    a byte at a time (slowloris) cannot hold a connection. uvicorn's own timeouts cover idle
    keep-alive connections only."""

    head_timeout_s: float = HEAD_TIMEOUT_S

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's Transport
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

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


# uvicorn settings of `serve`: idle keep-alive connections closed after 5 s, a request head that takes
# over HEAD_TIMEOUT_S closed, a request head of at most 16 KB, at most 256 connections at once (503 beyond).
UVICORN_LIMITS = {"timeout_keep_alive": 5, "h11_max_incomplete_event_size": 16 * 1024, "limit_concurrency": 256,
                  "http": HeadTimeoutProtocol}


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
