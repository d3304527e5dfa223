"""The web demo: a FastAPI app with the doodle demo's routes (`nnlab.serve.doodle`: guess drawings while
they are drawn) or the image demo's (`nnlab.serve.images`), and the limits both share.

One model is loaded (and warmed up) when the app is made and shared by every request:
onnxruntime for an export directory, torch for a run directory. Drawings that are not in
Google's simplified form (raw screen coordinates, with or without t) are simplified here.
Concurrent guesses share model calls (`MicroBatcher`): a busy server makes fewer, larger calls.

Limits: a body over 256 KB is refused with 413 (by its Content-Length and by the bytes
actually read); a body that is not `application/json` with 415 (a cross-origin page can only
send "simple" text/plain or form bodies without asking first); more than 256 strokes or 10,000
points, a coordinate beyond +-1e9, malformed JSON and malformed shapes are refused with 422 and
a message that names the problem. Raw drawings are simplified off the event loop at a bounded
cost (`serve/preprocess.py`); when too many very long ones queue up, 503. Every response carries
`X-Content-Type-Options: nosniff` and the CSP; the API docs (which load assets from a CDN) are off
unless `create_app(..., docs=True)`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

from nnlab.errors import NnlabError
from nnlab.inference.models.doodle import DoodleModel, load_doodle_model
from nnlab.inference.models.image import is_image_model
from nnlab.serve.doodle import MAX_BODY_BYTES, MAX_POINTS, MAX_STROKES, doodle_router
from nnlab.serve.hardening import (
    MAX_CONNECTIONS_PER_CLIENT,
    UVICORN_LIMITS,
    GuardedProtocol,
    HostCheck,
    SecurityHeaders,
    request_error,
    send_json,
)
from nnlab.serve.images import MAX_IMAGE_BYTES, image_router
from nnlab.serve.uploads import MAX_CONCURRENT
from nnlab.serve.workers import OPTIONS_ENV, supervise

# the doodle API's limits stay importable from here (tests and benchmarks read them)
__all__ = ["MAX_BODY_BYTES", "MAX_POINTS", "MAX_STROKES", "create_app", "serve"]

BODY_TIMEOUT_S = 10.0  # the whole request body must arrive within this (not each part of it)
# Everything the page needs comes from this server: no external scripts, styles or fonts.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


# --------------------------------------------------------------------------- body size limit


async def within(awaitable, deadline: float):
    """`await awaitable`, or TimeoutError at the event loop's time `deadline`. asyncio.timeout where there is
    one (Python 3.11+): wait_for makes a task per call, a tenth of a millisecond per request here."""
    if hasattr(asyncio, "timeout_at"):
        async with asyncio.timeout_at(deadline):
            return await awaitable
    return await asyncio.wait_for(awaitable, max(0.0, deadline - asyncio.get_running_loop().time()))


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so,
    else while reading (chunked uploads, or a Content-Length that lies). The body is read
    here and replayed to the app, so no handler ever sees more than `max_bytes`."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, {"detail": "Content-Length is not a number"})
                return
            if declared > self.max_bytes:
                await send_json(send, 413, self._too_large(declared))
                return
        body = bytearray()
        more = True
        timeout_s = BODY_TIMEOUT_S
        deadline = asyncio.get_running_loop().time() + timeout_s
        while more:
            try:  # a client trickling its body, even a byte at a time, cannot hold a connection for ever
                message = await within(receive(), deadline)
            except TimeoutError:
                await send_json(send, 408, {"detail": f"the request body took over {timeout_s:g} s to arrive"})
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await send_json(send, 413, self._too_large(None))
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> dict[str, str]:
        got = f" (got {size} bytes)" if size is not None else ""
        return {"detail": f"request body too large: at most {self.max_bytes} bytes ({self.max_bytes // 1024} KB)"
                          f" are allowed{got}"}


class FastRoutes:
    """ASGI middleware: requests for the hot routes ((method, path) -> a plain ASGI app) answered without
    FastAPI's routing, request and exception layers; every other request goes on to the app. It sits inside
    the body limit, the Host check and the security headers, so every protection still applies."""

    def __init__(self, app, routes: dict[tuple[str, str], object]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (route := self.routes.get((scope["method"], scope["path"]))) is not None:
            await route(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- the app


class DemoApp(FastAPI):
    """A demo's FastAPI app with its protections (`harden`) in front of FastAPI rather than inside it: every
    request passes them first, then the hot routes (`FastRoutes`) are answered without FastAPI's own layers
    (its error, telemetry and body-size middleware: tens of microseconds of the event loop a request), and every other
    request goes on to FastAPI. An error page of FastAPI's thus gets the security headers too."""

    guarded = None  # the protections around FastAPI's own entry, once `harden` has set them

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI's callables
        if self.guarded is None:
            await super().__call__(scope, receive, send)
        else:
            await self.guarded(scope, receive, send)


def static_dir() -> Path:
    return Path(str(resources.files("nnlab.serve") / "static"))


def create_app(path: str | os.PathLike | DoodleModel, threads: int | None = None,
               gallery: str | os.PathLike | None = None, docs: bool = False,
               allowed_hosts: Iterable[str] | None = None, max_concurrent: int = MAX_CONCURRENT) -> DemoApp:
    """The demo app for a run directory, an export directory or an already loaded model: the doodle
    demo (`nnlab.serve.doodle`), or for an image model the image demo (`nnlab.serve.images`; `gallery` for
    an embedding model). docs: serve /api/docs (its page loads Swagger UI from a CDN). allowed_hosts: answer
    only requests whose Host header is one of these (400 otherwise). max_concurrent: image uploads decoded or
    computed at once (503 beyond; `nnlab.serve.uploads`)."""
    page_headers = {"Content-Security-Policy": CSP}
    if not isinstance(path, DoodleModel) and is_image_model(path):
        app = DemoApp(title="nnlab image demo", docs_url="/api/docs" if docs else None, redoc_url=None,
                      openapi_url="/api/openapi.json")
        app.include_router(image_router(path, threads, gallery, page_headers=page_headers,
                                        max_concurrent=max_concurrent))
        app.mount("/static", StaticFiles(directory=static_dir()), name="static")
        return harden(app, MAX_IMAGE_BYTES, allowed_hosts)
    if gallery is not None:
        raise NnlabError(f"{path}: a doodle model; --gallery is for embedding models")
    model = path if isinstance(path, DoodleModel) else load_doodle_model(path, threads=threads)
    app = DemoApp(title="nnlab doodle demo", docs_url="/api/docs" if docs else None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.model = model
    router = doodle_router(model, page_headers=page_headers)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return harden(app, MAX_BODY_BYTES, allowed_hosts, router.fast_routes)


def harden(app: DemoApp, max_bytes: int, allowed_hosts: Iterable[str] | None,
           fast_routes: dict[tuple[str, str], object] | None = None) -> DemoApp:
    """The limits every demo app has: a body cap and a whole-body deadline (413, 408), Host checks (400:
    two Host headers, or with `allowed_hosts` another host), request-parameter errors as one line (422),
    and nosniff and the CSP on every answer; `fast_routes` (`FastRoutes`) answered inside all of them."""
    app.add_exception_handler(RequestValidationError, request_error)
    inner = functools.partial(FastAPI.__call__, app)
    if fast_routes:
        inner = FastRoutes(inner, routes=fast_routes)
    # outermost first: the headers on every answer (413 and 400 included), the Host check, the body limit
    app.guarded = SecurityHeaders(HostCheck(BodyLimit(inner, max_bytes=max_bytes), allowed_hosts=allowed_hosts),
                                  csp=CSP)
    return app


def serve(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None,
          access_log: bool = True, announce=None, gallery: str | os.PathLike | None = None,
          allowed_hosts: Iterable[str] | None = None, docs: bool = False, max_concurrent: int = MAX_CONCURRENT,
          max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT, workers: int = 1) -> None:
    """Load the model, then run uvicorn until interrupted; `announce(url)` is called once it is loaded.
    A port already in use is a one-line error before the model is loaded. uvicorn runs with
    `UVICORN_LIMITS` (idle connections closed, request heads and connections capped), at most
    `max_connections_per_client` connections from one address (behind a proxy, every client has its address).

    workers > 1: that many processes answer on the port, each with its own model and its own interpreter
    lock, so Python's share of a request runs on every core. The model is loaded here first, so that what
    cannot be served is one line before any worker starts; then this process becomes their supervisor
    (`nnlab.serve.workers`, which restarts a worker that dies; `serve` does not return).
    The connection cap and `max_concurrent` are shared among the workers (each takes its share, rounded up);
    `limit_concurrency` (256 connections) holds per worker."""
    if workers < 1:
        raise NnlabError(f"--workers must be at least 1, got {workers}")
    check_port_free(host, port)
    options = {"threads": threads, "gallery": None if gallery is None else str(Path(gallery).resolve()),
               "docs": docs, "allowed_hosts": None if allowed_hosts is None else list(allowed_hosts),
               "max_concurrent": worker_share(max_concurrent, workers)}
    app = create_app(path, **options)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{port}/")
    per_client = worker_share(max_connections_per_client, workers)
    server = {"host": host, "port": port, "access_log": access_log, "log_level": "info" if access_log else "warning"}
    if workers == 1:
        uvicorn.run(app, **{**UVICORN_LIMITS, **server, "http": type("GuardedProtocol", (GuardedProtocol,),
                                                                      {"max_connections_per_client": per_client})})
        return
    del app  # checked: each worker loads its own, and the supervisor none (`nnlab.serve.workers`)
    supervise({**options, "path": str(Path(path).resolve()), "max_connections_per_client": per_client},
              {**server, "workers": workers})


def worker_share(limit: int, workers: int) -> int:
    """One worker's share of a limit of the whole server, rounded up."""
    return -(-limit // workers)


def worker_app() -> DemoApp:
    """The app of one worker process of `serve(workers=N)` (uvicorn imports it by name, as a factory), made
    from the options `serve` left in the environment."""
    options = json.loads(os.environ[OPTIONS_ENV])
    # this process serves this app only: its protocol class takes the worker's share of the connection cap
    GuardedProtocol.max_connections_per_client = options.pop("max_connections_per_client")
    return create_app(options.pop("path"), **options)


def check_port_free(host: str, port: int) -> None:
    """NnlabError naming --port when (host, port) cannot be bound (another server holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise NnlabError(f"cannot listen on {host}:{port} ({exc.strerror}); another server uses it? "
                             f"Pick a free port with --port {port + 1}") from None
