"""Uploaded images decoded and computed at a bounded cost: a pixel budget, reduced decoding and
admission slots, so that concurrent uploads of the largest images allowed keep memory bounded and
/api/health answering.

An upload's size is read from its header first (nothing decoded): over `MAX_UPLOAD_PIXELS`, 413.
Each request then holds a slot while its image is decoded and the model runs: at most
`max_concurrent` requests at once, of which at most `max_heavy` have an image over `LIGHT_PIXELS`
(those cost the most to decode, on threads of a lower priority); a request beyond either is answered 503 with `Retry-After` at
once, rather than queueing work without end. A large image is decoded reduced (JPEG at 1/2..1/8
of its scale, others shrunk by an integer factor) to sides of at least `REDUCE_TO` pixels, or four
times the model's input when larger, before the model's own resize: full-size float copies of a
16 MP image never exist, and an image of ordinary size is read exactly as `nnlab predict` reads it.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from nnlab.device import usable_cores
from nnlab.errors import DataError
from nnlab.inference.models.image import decode_image
from nnlab.ingest.image_files import ImageTooLargeError, image_size

MAX_UPLOAD_PIXELS = 16_000_000  # e.g. 4,000 x 4,000; a larger photo is refused from its header (413)
LIGHT_PIXELS = 2_000_000  # up to this, an image is cheap to decode (a few ms)
REDUCE_TO = 1024  # a large image is decoded to sides of at least this (or 4x the model's input)
MAX_CONCURRENT = 16  # requests decoding or computing at once (`nnlab serve --max-concurrent`)
# of which with an image over LIGHT_PIXELS: half the cores, so that the others keep serving ordinary requests
MAX_HEAVY = max(1, usable_cores() // 2)
ACCEPTED_TYPES = ("image/", "application/octet-stream")  # browsers send no image type for some formats (PGM)


def _lower_priority() -> None:
    """Run this worker thread at nice 10 (Linux: a thread is a task): large decodes take the CPU that
    ordinary requests leave, not theirs."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: the slots still bound the work
        pass


class Refused(Exception):
    """An upload refused with an HTTP status and a message (`response()` is the answer)."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=headers)


class Uploads:
    """`async with uploads.image(request) as image:` the uploaded image as uint8 (as `read_image` gives
    it), the request holding an admission slot until the block ends (see the module doc); `Refused`
    otherwise (415, 422, 413, 503). Touched on the event loop only: plain counters, no locks."""

    def __init__(self, image_size_: int, max_concurrent: int = MAX_CONCURRENT, max_heavy: int = MAX_HEAVY,
                 max_pixels: int = MAX_UPLOAD_PIXELS) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.reduce_to = max(REDUCE_TO, 4 * int(image_size_))
        self.max_concurrent = max_concurrent
        self.max_heavy = min(max_heavy, max_concurrent)
        self.max_pixels = max_pixels
        self.running = 0
        self.heavy = 0
        self._heavy_pool = ThreadPoolExecutor(self.max_heavy, thread_name_prefix="nnlab-decode-large",
                                              initializer=_lower_priority)

    @asynccontextmanager
    async def image(self, request: Request) -> AsyncIterator[np.ndarray]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind.startswith(ACCEPTED_TYPES):
            raise Refused(415, f"Content-Type {kind or '(none)'!r}: send the image file itself as the body, with "
                               "Content-Type image/png, image/jpeg, ... (or application/octet-stream)")
        body = await request.body()
        if not body:
            raise Refused(422, "the body is empty: send an image file (PNG, JPEG, PGM, ...)")
        try:
            width, height = image_size(io.BytesIO(body), "upload")  # the header only: microseconds
        except ImageTooLargeError as exc:
            raise Refused(413, str(exc)) from None
        except DataError as exc:
            raise Refused(422, str(exc)) from None
        if width * height > self.max_pixels:
            raise Refused(413, f"image upload: {width} x {height} pixels; at most {self.max_pixels:,} pixels "
                               "are allowed")
        heavy = width * height > LIGHT_PIXELS
        if self.running >= self.max_concurrent or (heavy and self.heavy >= self.max_heavy):
            what = f"{self.heavy} large images" if heavy and self.heavy >= self.max_heavy else \
                f"{self.running} images"
            raise Refused(503, f"the server is busy ({what} being processed); retry later", retry_after=1)
        self.running += 1
        self.heavy += heavy
        try:
            try:
                if heavy:
                    image = await asyncio.get_running_loop().run_in_executor(
                        self._heavy_pool, decode_image, body, "upload", self.max_pixels, self.reduce_to)
                else:
                    image = await run_in_threadpool(decode_image, body, "upload", self.max_pixels, self.reduce_to)
            except ImageTooLargeError as exc:
                raise Refused(413, str(exc)) from None
            except DataError as exc:
                raise Refused(422, str(exc)) from None
            yield image
        finally:
            self.running -= 1
            self.heavy -= heavy
