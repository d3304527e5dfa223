"""The doodle demo's routes: guess drawings while they are drawn.

    GET  /               the drawing page (static/index.html, app.js, style.css; no external assets)
    POST /api/predict    {"drawing": [[[x...], [y...]] or [[x...], [y...], [t...]], ...], "top_k": 3}
                         -> {"predictions": [{"word": ..., "probability": ...}, ...]}
    GET  /api/classes    {"classes": [...]}
    GET  /api/health     {"status": "ok", "backend": ..., "model": ..., "classes": N, ...}
    GET  /api/sample     a random validation drawing with the model's guesses

The model is warmed up when the router is made; concurrent guesses share model calls (`MicroBatcher`),
raw drawings are simplified off the event loop (`Preprocessor`, or the batch's thread), both stopped with the
app (the router's lifespan). The body limit, the Host check and the security headers are the app's
(`nnlab.serve.app.harden`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from nnlab.schema_errors import describe_error
from nnlab.errors import DataError, NnlabError
from nnlab.inference.models.doodle import DoodleModel, arrays_to_google, check_google_stroke, google_to_arrays
from nnlab.serve.batching import MicroBatcher
from nnlab.serve.hardening import is_json, send_json_bytes
from nnlab.serve.preprocess import Busy, Preprocessor

MAX_BODY_BYTES = 256 * 1024
MAX_STROKES = 256
MAX_POINTS = 10_000
MAX_COORDINATE = 1e9  # px or ms; beyond it the arithmetic of simplification overflows
MAX_ERRORS_SHOWN = 5
PAGE = Path(__file__).parent / "static" / "index.html"
log = logging.getLogger("uvicorn.error")  # where uvicorn reports the errors of the other routes


# --------------------------------------------------------------------------- request and response bodies

Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_COORDINATE, le=MAX_COORDINATE)]


Stroke = Annotated[list[list[Number]], AfterValidator(check_google_stroke)]  # the Python API's check too


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


def _guesses(pairs: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    """(word, probability) pairs as the API's guesses (`Guess` fields), probabilities rounded to 6 places."""
    return [{"word": w, "probability": round(p, 6)} for w, p in pairs]


class PredictResponse(BaseModel):
    predictions: list[Guess]


class SampleResponse(BaseModel):
    word: str | None = Field(description="the drawing's true class")
    key_id: str
    drawing: list[list[list[int]]] = Field(description="Google's simplified strokes, 0..255")
    predictions: list[Guess]


# --------------------------------------------------------------------------- validation messages


def _describe(error: dict[str, Any]) -> str:
    """One line per pydantic error: where (drawing.3.1.7) and what (`nnlab.schema_errors.describe_error`, the
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


Answer = tuple[int, bytes, dict[str, str]]  # status, JSON body, extra headers


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return status, json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(), headers or {}


def _unprocessable(messages: list[str]) -> Answer:
    more = f"; and {len(messages) - MAX_ERRORS_SHOWN} more" if len(messages) > MAX_ERRORS_SHOWN else ""
    return _json(422, {"detail": "; ".join(messages[:MAX_ERRORS_SHOWN]) + more, "errors": messages[:50]})


# --------------------------------------------------------------------------- POST /api/predict


class PredictEndpoint:
    """POST /api/predict as a plain ASGI app, and its answers (`answer`) for the FastAPI route too.

    The body is parsed and validated by pydantic-core straight from the bytes, raw drawings are simplified off
    the event loop (`Preprocessor`, or the batch's thread) and guessed in micro-batches (`MicroBatcher`). Served
    straight from ASGI, behind the body limit, the Host check and the security headers (`nnlab.serve.app.DemoApp`):
    FastAPI's routing, request and exception layers cost the event loop more than the model costs its thread
    (benchmarks/serve_load.py)."""

    def __init__(self, model: DoodleModel, batcher: MicroBatcher, prep: Preprocessor) -> None:
        self.model, self.batcher, self.prep = model, batcher, prep

    async def answer(self, content_type: str | None, raw: bytes) -> Answer:
        """(status, JSON bytes, extra headers) for one request's Content-Type and body."""
        if not is_json(content_type):
            return _json(415, {"detail": "send the drawing as JSON (Content-Type: application/json)"})
        if not raw.strip():
            return _unprocessable(["the body is empty (send JSON: {\"drawing\": [...], \"top_k\": 3})"])
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as exc:
            return _unprocessable([_describe(e) for e in exc.errors()])
        classes = self.model.classes
        if body.top_k > len(classes):
            return _unprocessable([f"top_k: must be between 1 and {len(classes)} (the number of classes), "
                                   f"got {body.top_k}"])
        try:
            probs = await self.batcher.probabilities(*await self.prep(google_to_arrays(body.drawing)))
        except Busy as exc:
            return _json(503, {"detail": str(exc)}, {"Retry-After": "1"})
        except DataError as exc:
            return _unprocessable([f"drawing: {exc}"])
        return _json(200, {"predictions": _guesses(self.model.top_k(probs, body.top_k))})

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI's callables
        raw = bytearray()
        while True:  # the body limit hands the whole body over at once
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), None)
        try:
            status, data, headers = await self.answer(content_type, bytes(raw))
        except Exception:  # noqa: BLE001 - a fault of the server's: logged, and answered as FastAPI would
            log.exception("POST /api/predict failed")
            status, data, headers = _json(500, {"detail": "Internal Server Error"})
        await send_json_bytes(send, status, data, [(k.lower().encode(), v.encode()) for k, v in headers.items()])


# --------------------------------------------------------------------------- the routes


def doodle_router(model: DoodleModel, page_headers: dict[str, str] | None = None) -> APIRouter:
    """The routes of the doodle demo for a loaded model (warmed up here, its samples loading meanwhile).
    `router.fast_routes` maps ("POST", "/api/predict") to its plain ASGI endpoint (`nnlab.serve.app.FastRoutes`
    answers it before FastAPI's routing; the route here gives the OpenAPI schema and the same answers)."""
    model.warm_up()
    model.samples.prefetch()
    batcher = MicroBatcher(model)
    prep = Preprocessor(raw=model.prep.raw)
    endpoint = PredictEndpoint(model, batcher, prep)

    @asynccontextmanager
    async def lifespan(app: Any):
        yield
        batcher.close()
        prep.close()

    router = APIRouter(lifespan=lifespan)
    rng = random.Random()
    rng_lock = threading.Lock()

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(PAGE, headers={"Cache-Control": "no-cache", **(page_headers or {})})

    @router.post("/api/predict", response_model=PredictResponse,
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                     "schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request) -> Response:
        """The model's top_k guesses for one drawing."""
        status, data, headers = await endpoint.answer(request.headers.get("content-type"), await request.body())
        return Response(data, status_code=status, media_type="application/json", headers=headers)

    @router.get("/api/classes")
    async def classes() -> dict[str, list[str]]:
        return {"classes": model.classes}

    @router.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **model.info(), "limits": {"body_bytes": MAX_BODY_BYTES, "strokes": MAX_STROKES,
                                                           "points": MAX_POINTS}}

    @router.get("/api/sample", response_model=SampleResponse)
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

    router.fast_routes = {("POST", "/api/predict"): endpoint}
    return router
