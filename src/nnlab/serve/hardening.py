"""HTTP hardening shared by the demo's app: headers on every answer, content types, server limits."""

from __future__ import annotations

# uvicorn settings of `serve`: idle keep-alive connections closed after 5 s, a request head
# (request line and headers) of at most 16 KB, at most 256 connections at once (503 beyond).
UVICORN_LIMITS = {"timeout_keep_alive": 5, "h11_max_incomplete_event_size": 16 * 1024, "limit_concurrency": 256}


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
