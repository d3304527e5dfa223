"""The doodle demo: a FastAPI app that guesses drawings while they are drawn.

    GET  /               the drawing page (static/index.html, app.js, style.css; no external assets)
    POST /api/predict    {"drawing": [[[x...], [y...]] or [[x...], [y...], [t...]], ...], "top_k": 3}
                         -> {"predictions": [{"word": ..., "probability": ...}, ...]}
    GET  /api/classes    {"classes": [...]}
    GET  /api/health     {"status": "ok", "backend": ..., "model": ..., "classes": N, ...}
    GET  /api/sample     a random validation drawing with the model's guesses

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
import json
import os
import random
import socket
import threading
from collections.abc import Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.middleware.trustedhost import TrustedHostMiddleware

from nnlab.config import describe_error
from nnlab.errors import DataError, NnlabError
from nnlab.inference.doodle import DoodleModel, arrays_to_google, google_to_arrays, load_doodle_model
from nnlab.inference.image_model import is_image_model
from nnlab.serve.batching import MicroBatcher
from nnlab.serve.hardening import UVICORN_LIMITS, SecurityHeaders, is_json
from nnlab.serve.images import MAX_IMAGE_BYTES, image_router
from nnlab.serve.preprocess import Busy, Preprocessor

MAX_BODY_BYTES = 256 * 1024
MAX_STROKES = 256
MAX_POINTS = 10_000
MAX_COORDINATE = 1e9  # px or ms; beyond it the arithmetic of simplification overflows
MAX_ERRORS_SHOWN = 5
BODY_TIMEOUT_S = 10.0  # between two parts of a request body
# Everything the page needs comes from this server: no external scripts, styles or fonts.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


# --------------------------------------------------------------------------- request and response bodies

Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_COORDINATE, le=MAX_COORDINATE)]


def _check_stroke(stroke: list[list[float]]) -> list[list[float]]:
    if len(stroke) not in (2, 3):
        raise ValueError(f"a stroke is [[x...], [y...]] or [[x...], [y...], [t...]], got {len(stroke)} lists")
    lengths = [len(c) for c in stroke]
    if lengths[0] == 0:
        raise ValueError("a stroke has no points")
    if len(set(lengths)) > 1:
        names = "x, y, t" if len(stroke) == 3 else "x, y"
        raise ValueError(f"{names} have different lengths ({', '.join(map(str, lengths))})")
    return stroke


Stroke = Annotated[list[list[Number]], AfterValidator(_check_stroke)]


class PredictRequest(BaseModel):
    """A drawing in Google's format and how many guesses to return."""

    model_config = ConfigDict(extra="forbid")

    drawing: list[Stroke] = Field(description="strokes: [[x...], [y...]] (simplified, 0..255) or "
                                              "[[x...], [y...], [t...]] (raw, simplified by the server)")
    top_k: int = Field(3, strict=True, ge=1, description="guesses to return (at most the number of classes)")

    @field_validator("drawing", mode="before")
    @classmethod
    def _stroke_count(cls, value: Any) -> Any:
        # checked before the strokes themselves, so an oversized drawing costs nothing to refuse
        if isinstance(value, list):
            if not value:
                raise ValueError("the drawing has no strokes")
            if len(value) > MAX_STROKES:
                raise ValueError(f"{len(value)} strokes; at most {MAX_STROKES} are allowed")
        return value

    @model_validator(mode="after")
    def _point_count(self) -> PredictRequest:
        points = sum(len(s[0]) for s in self.drawing)
        if points > MAX_POINTS:
            raise PydanticCustomError("too_many_points", "drawing: {points} points; at most {limit} are allowed",
                                      {"points": points, "limit": MAX_POINTS})
        return self


class Guess(BaseModel):
    word: str
    probability: float


def _guesses(pairs: Iterable[tuple[str, float]]) -> list[Guess]:
    """(word, probability) pairs as the API's guesses, probabilities rounded to 6 places."""
    return [Guess(word=w, probability=round(p, 6)) for w, p in pairs]


class PredictResponse(BaseModel):
    predictions: list[Guess]


class SampleResponse(BaseModel):
    word: str | None = Field(description="the drawing's true class")
    key_id: str
    drawing: list[list[list[int]]] = Field(description="Google's simplified strokes, 0..255")
    predictions: list[Guess]


# --------------------------------------------------------------------------- body size limit


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
                await _send_json(send, 400, {"detail": "Content-Length is not a number"})
                return
            if declared > self.max_bytes:
                await _send_json(send, 413, self._too_large(declared))
                return
        body = bytearray()
        more = True
        while more:
            try:  # a client trickling its body cannot hold a connection for ever
                message = await asyncio.wait_for(receive(), BODY_TIMEOUT_S)
            except TimeoutError:
                await _send_json(send, 408, {"detail": f"the request body took over {BODY_TIMEOUT_S:g} s to arrive"})
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _send_json(send, 413, self._too_large(None))
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


async def _send_json(send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


# --------------------------------------------------------------------------- validation messages


def _describe(error: dict[str, Any]) -> str:
    """One line per pydantic error: where (drawing.3.1.7) and what (`nnlab.config.describe_error`, the
    one formatter of pydantic errors, after the messages peculiar to a request body)."""
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        return f"the body is not valid JSON: {(error.get('ctx') or {}).get('error', msg)}"
    if not loc and error.get("type") in ("model_type", "model_attributes_type", "dict_type"):
        return "the body must be a JSON object: {\"drawing\": [...], \"top_k\": 3}"
    if error.get("type") == "too_many_points":
        return msg
    if not loc:
        return f"body: {msg}"
    if error.get("type") == "finite_number":
        error = {**error, "msg": "NaN and infinity are not coordinates"}
    return describe_error(error, PredictRequest, noun="field", skip=("body",), show_input=False)


def _unprocessable(messages: list[str]) -> JSONResponse:
    return JSONResponse({"detail": "; ".join(messages[:MAX_ERRORS_SHOWN])
                         + (f"; and {len(messages) - MAX_ERRORS_SHOWN} more" if len(messages) > MAX_ERRORS_SHOWN
                            else ""),
                         "errors": messages[:50]}, status_code=422)


# --------------------------------------------------------------------------- the app


def static_dir() -> Path:
    return Path(str(resources.files("nnlab.serve") / "static"))


def create_app(path: str | os.PathLike | DoodleModel, threads: int | None = None,
               gallery: str | os.PathLike | None = None, docs: bool = False,
               allowed_hosts: Iterable[str] | None = None) -> FastAPI:
    """The demo app for a run directory, an export directory or an already loaded model: the doodle
    demo, or for an image model the image demo (`nnlab.serve.images`; `gallery` for an embedding model).
    docs: serve /api/docs (its page loads Swagger UI from a CDN). allowed_hosts: answer only
    requests whose Host header is one of these (400 otherwise)."""
    if not isinstance(path, DoodleModel) and is_image_model(path):
        app = FastAPI(title="nnlab image demo", docs_url="/api/docs" if docs else None, redoc_url=None,
                      openapi_url="/api/openapi.json")
        app.include_router(image_router(path, threads, gallery, page_headers={"Content-Security-Policy": CSP}))
        app.mount("/static", StaticFiles(directory=static_dir()), name="static")
        return harden(app, MAX_IMAGE_BYTES, allowed_hosts)
    if gallery is not None:
        raise NnlabError(f"{path}: a doodle model; --gallery is for embedding models")
    model = path if isinstance(path, DoodleModel) else load_doodle_model(path, threads=threads)
    model.warm_up()
    model.samples.prefetch()
    batcher = MicroBatcher(model)
    prep = Preprocessor(raw=model.prep.raw)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()
        prep.close()

    app = FastAPI(title="nnlab doodle demo", docs_url="/api/docs" if docs else None, redoc_url=None,
                  openapi_url="/api/openapi.json", lifespan=lifespan)
    app.state.model = model
    rng = random.Random()
    rng_lock = threading.Lock()

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache",
                                                                  "Content-Security-Policy": CSP})

    @app.post("/api/predict", response_model=PredictResponse,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request) -> Response:
        """The model's top_k guesses for one drawing."""
        # parsed and validated by pydantic-core straight from the bytes: FastAPI's body
        # handling and response encoding cost more than the model on a small CPU
        if not is_json(request.headers.get("content-type")):
            return JSONResponse({"detail": "send the drawing as JSON (Content-Type: application/json)"},
                                status_code=415)
        raw = await request.body()
        if not raw.strip():
            return _unprocessable(["the body is empty (send JSON: {\"drawing\": [...], \"top_k\": 3})"])
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as exc:
            return _unprocessable([_describe(e) for e in exc.errors()])
        if body.top_k > len(model.classes):
            return _unprocessable([f"top_k: must be between 1 and {len(model.classes)} (the number of classes), "
                                   f"got {body.top_k}"])
        try:
            probs = await batcher.probabilities(await prep(google_to_arrays(body.drawing)))
        except Busy as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        except DataError as exc:
            return _unprocessable([f"drawing: {exc}"])
        answer = PredictResponse(predictions=_guesses(model.top_k(probs, body.top_k)))
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.get("/api/classes")
    def classes() -> dict[str, list[str]]:
        return {"classes": model.classes}

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **model.info(), "limits": {"body_bytes": MAX_BODY_BYTES, "strokes": MAX_STROKES,
                                                           "points": MAX_POINTS}}

    @app.get("/api/sample", response_model=SampleResponse)
    def sample() -> SampleResponse | JSONResponse:
        """A random validation drawing and what the model makes of it."""
        try:
            drawings = model.samples.drawings()
        except NnlabError as exc:
            return JSONResponse({"detail": f"no validation drawings to show: {exc}"}, status_code=404)
        if not drawings:
            return JSONResponse({"detail": "this model has no validation drawings to show"}, status_code=404)
        with rng_lock:
            d = drawings[rng.randrange(len(drawings))]
        strokes = [s[:, :2] for s in d.strokes]
        return SampleResponse(word=d.word, key_id=str(d.key_id), drawing=arrays_to_google(strokes),
                              predictions=_guesses(model.guess([strokes], min(3, len(model.classes)))[0]))

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return harden(app, MAX_BODY_BYTES, allowed_hosts)


def harden(app: FastAPI, max_bytes: int, allowed_hosts: Iterable[str] | None) -> FastAPI:
    """The limits every demo app has: a body cap (413), optional Host checks (400), and nosniff and the
    CSP on every answer."""
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders, csp=CSP)  # outermost: on every answer, 413 and 400 included
    return app


def serve(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None,
          access_log: bool = True, announce=None, gallery: str | os.PathLike | None = None,
          allowed_hosts: Iterable[str] | None = None, docs: bool = False) -> None:
    """Load the model, then run uvicorn until interrupted; `announce(url)` is called once it is loaded.
    A port already in use is a one-line error before the model is loaded. uvicorn runs with
    `UVICORN_LIMITS` (idle connections closed, request heads and connections capped)."""
    check_port_free(host, port)
    app = create_app(path, threads=threads, gallery=gallery, docs=docs, allowed_hosts=allowed_hosts)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{port}/")
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info" if access_log else "warning",
                **UVICORN_LIMITS)


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
