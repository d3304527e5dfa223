"""The image demo's routes: classify an uploaded image, or identify the person in it.

    GET  /               the page (static/images.html, images.js, images.css; no external assets):
                         drop or pick an image, see the top-k classes or who it is
    POST /api/predict    image classifier: the body is the image file itself (Content-Type image/* or
                         application/octet-stream), ?top_k=3 -> {"predictions": [{"label", "probability"}]}
    POST /api/identify   embedding model served with a gallery: the same body, a face crop or a photo
                         (every face detected and aligned: nnlab.inference.faces.photos) ->
                         {"faces": [{"box": [x0, y0, x1, y1] or null for a crop, "identity": name or
                          "unknown", "similarity", "accepted", "best", "runner_up",
                          "runner_up_similarity"}, ...] (largest first), "threshold", "width", "height",
                          and the first face's answer at the top level}; a photo without a face 422
    GET  /api/health     the model, its task, the gallery and the limits
    GET  /api/classes    the classifier's classes, or the gallery's identities

Limits, as the doodle API: a body over MAX_IMAGE_BYTES gets 413 (the app's BodyLimit middleware),
an image over MAX_UPLOAD_PIXELS pixels 413, a Content-Type that is not an image 415, an empty body, a
corrupt image or a bad top_k 422, too many uploads at once 503 with Retry-After (`nnlab.serve.uploads`:
a pixel budget, reduced decoding, admission slots), each with a message in "detail".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from nnlab.errors import NnlabError
from nnlab.inference.faces.detect import default_detector
from nnlab.inference.faces.gallery import Gallery, Match
from nnlab.inference.models.image import DEFAULT_FPR, ImageModel, load_image_model
from nnlab.serve.uploads import MAX_CONCURRENT, MAX_UPLOAD_PIXELS, Refused, Uploads

MAX_IMAGE_BYTES = 8 * 1024 * 1024


class Prediction(BaseModel):
    label: str
    probability: float


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class FaceAnswer(BaseModel):
    box: list[float] | None
    identity: str
    similarity: float
    accepted: bool
    best: str
    runner_up: str | None
    runner_up_similarity: float | None

    @classmethod
    def of(cls, m: Match) -> FaceAnswer:
        return cls(box=None if m.face is None else [round(v, 1) for v in m.face.box], identity=m.identity,
                   similarity=round(m.similarity, 6), accepted=m.accepted, best=m.best, runner_up=m.runner_up,
                   runner_up_similarity=None if m.runner_up_similarity is None else round(m.runner_up_similarity, 6))


class IdentifyResponse(FaceAnswer):
    threshold: float
    width: int
    height: int
    faces: list[FaceAnswer]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def image_router(path: str | os.PathLike | ImageModel, threads: int | None = None,
                 gallery: str | os.PathLike | Gallery | None = None, fpr: float = DEFAULT_FPR,
                 page_headers: dict[str, str] | None = None, max_concurrent: int = MAX_CONCURRENT) -> APIRouter:
    """The routes for an image classifier, or for an embedding model and its gallery; at most
    `max_concurrent` uploads decoded or computed at once (`nnlab.serve.uploads`)."""
    model = path if isinstance(path, ImageModel) else load_image_model(path, threads=threads)
    if model.task == "embedding" and gallery is None:
        raise NnlabError(f"{model.path}: an embedding model; serve it with --gallery GALLERY (nnlab gallery build)")
    if model.task == "classifier" and gallery is not None:
        raise NnlabError(f"{model.path}: an image classifier; --gallery is for embedding models")
    if gallery is not None and not isinstance(gallery, Gallery):
        gallery = Gallery.load(gallery)
    threshold = None
    if gallery is not None:
        gallery.check_model(model, str(getattr(gallery, "path", "gallery")))
        threshold = model.threshold(fpr)
        gallery.index()  # built now, not on the first request
        try:
            default_detector()  # MTCNN loaded now too; without facenet-pytorch, photos get the install hint
        except NnlabError:
            pass
    model.outputs(model.prep.to_input([np.zeros((8, 8), dtype=np.uint8)]))  # first-call costs before any request
    uploads = Uploads(model.prep.image_size, max_concurrent=max_concurrent)
    router = APIRouter()
    page = Path(__file__).parent / "static" / "images.html"

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(page, headers={"Cache-Control": "no-cache", **(page_headers or {})})

    @router.get("/api/health")
    async def health() -> dict[str, Any]:
        info = {"status": "ok", **model.info(), "limits": {"body_bytes": MAX_IMAGE_BYTES, "pixels": MAX_UPLOAD_PIXELS,
                                                       "concurrent": max_concurrent}}
        if gallery is not None:
            info["gallery"] = {"people": len(gallery.identities), "images": len(gallery),
                               "search": gallery.index().name, "threshold": threshold, "fpr": fpr}
        return info

    @router.get("/api/classes")
    async def classes() -> dict[str, list[str]]:
        return {"classes": gallery.identities if gallery is not None else model.classes}

    @router.post("/api/predict", response_model=PredictResponse)
    async def predict(request: Request, top_k: int = 3) -> Any:
        """The top_k classes of one uploaded image."""
        if model.task != "classifier":
            return _error(404, "this server identifies people: POST the image to /api/identify")
        if not 1 <= top_k <= len(model.classes):
            return _error(422, f"top_k: must be between 1 and {len(model.classes)} (the number of classes), "
                               f"got {top_k}")
        try:
            async with uploads.image(request) as image:
                probs = (await run_in_threadpool(model.probabilities, [image]))[0]
        except Refused as refused:
            return refused.response()
        return PredictResponse(predictions=[Prediction(label=c, probability=round(p, 6))
                                            for c, p in model.top_k(probs, top_k)])

    @router.post("/api/identify", response_model=IdentifyResponse)
    async def identify(request: Request) -> Any:
        """Who is in one uploaded image (or unknown below the threshold)."""
        if gallery is None:
            return _error(404, "this server classifies images: POST the image to /api/predict")
        try:
            async with uploads.image(request) as image:  # decoded to sides >= 1024, the detector's working size
                matches = await run_in_threadpool(gallery.identify_photo, image, model, threshold)
        except Refused as refused:
            return refused.response()
        except NnlabError as exc:  # no face detector installed
            return _error(422, str(exc))
        if not matches:
            return _error(422, f"no face found in this photo ({image.shape[1]} x {image.shape[0]} pixels); "
                               "send a photo where a face is seen from the front, or a face crop")
        answers = [FaceAnswer.of(m) for m in matches]
        return IdentifyResponse(**answers[0].model_dump(), threshold=threshold, width=image.shape[1],
                                height=image.shape[0], faces=answers)

    return router
