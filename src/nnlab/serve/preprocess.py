"""Drawings made ready for the model at a bounded cost per request, the event loop kept free.

A simplified drawing (integers in 0..255, no time) costs nothing and is taken as it is. A raw one
goes through Google's simplification off the event loop (the numba kernels release the GIL, so
the loop keeps answering, /api/health included). Its cost grows with its ink length once scaled
to 0..255 (Google resamples every 1 px): real drawings have at most a few ten thousand px and are
simplified by the guesser's thread with the batch they join (`MicroBatcher`: no hop to another
thread, which cost about as much as simplifying them); a longer one (a hostile zigzag of 10,000
points has millions) is resampled more coarsely, down to `MAX_INK` points, on a thread of its own,
so that it only ever waits for others of its kind. Too many of those pending, or one over the time
limit, gets 503 (`Busy`) instead of an ever-growing queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nnlab.errors import NnlabError
from nnlab.inference.models.doodle import checked_strokes, is_simplified, prepare_strokes
from nnlab.strokes.simplify import scaled_ink_length, simplify_strokes

# Scaled ink of the longest real raw drawings is about 32,000 px; up to this, Google's 1 px resampling.
LIGHT_INK = 40_000
# Beyond LIGHT_INK, resampled to at most this many points: about 0.2 s of one core, whatever the shape.
MAX_INK = 100_000


class Busy(NnlabError):
    """The server has too much costly work queued; the client should retry later."""


Finish = Callable[[list[np.ndarray]], list[np.ndarray]]  # work left for the guesser's thread


class Preprocessor:
    """`await prep(strokes)` -> (strokes, finish): the drawing in Google's simplified frame and None, or checked
    raw strokes and the simplification the guesser's thread applies to them (see the module doc)."""

    def __init__(self, max_heavy_pending: int = 8, timeout_s: float = 10.0, raw: str = "simplify") -> None:
        self.raw = raw  # "frame": a model trained on raw drawings takes them framed (cheap), not simplified
        self._heavy = ThreadPoolExecutor(1, thread_name_prefix="nnlab-simplify-long")
        self.max_heavy_pending = max_heavy_pending
        self.timeout_s = timeout_s
        self._heavy_pending = 0  # touched on the event loop only

    async def __call__(self, strokes: Sequence[np.ndarray]) -> tuple[list[np.ndarray], Finish | None]:
        arrays = checked_strokes(strokes)
        if is_simplified(arrays):  # kept, as prepare_strokes keeps it (without checking it twice)
            return [a.astype(np.int32) for a in arrays], None
        if self.raw == "frame":
            return prepare_strokes(arrays, raw=self.raw), None  # linear in the points: no thread needed
        if scaled_ink_length(arrays) <= LIGHT_INK:
            return arrays, simplify_strokes
        if self._heavy_pending >= self.max_heavy_pending:
            raise Busy(f"{self._heavy_pending} very long drawings are being simplified; retry later")
        self._heavy_pending += 1
        job = asyncio.get_running_loop().run_in_executor(self._heavy, prepare_strokes, arrays, MAX_INK)
        job.add_done_callback(self._heavy_done)
        try:
            return await asyncio.wait_for(asyncio.shield(job), self.timeout_s), None
        except TimeoutError:
            raise Busy(f"simplifying the drawing took over {self.timeout_s:g} s; retry later") from None

    def _heavy_done(self, _job) -> None:
        self._heavy_pending -= 1

    def close(self) -> None:
        self._heavy.shutdown(wait=False, cancel_futures=True)
