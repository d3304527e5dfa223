"""Micro-batching: concurrent requests guessed together on one worker thread."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np

from nnlab.inference.models.doodle import DoodleModel


class MicroBatcher:
    """Guesses concurrent requests together on one worker thread.

    While a batch runs, new drawings queue up and go together in the next model call; a lone
    request runs at once (nothing waits for a batch to fill). A server under load thus makes
    fewer, larger calls, and its event loop keeps reading requests while the model computes
    (onnxruntime and torch release the GIL)."""

    def __init__(self, model: DoodleModel, max_batch: int = 64) -> None:
        self.model = model
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def probabilities(self, strokes: Sequence[np.ndarray], finish: Callable | None = None) -> np.ndarray:
        """Class probabilities of one drawing, computed in a batch. The strokes are ready for the model
        (`prepare_strokes`'s output), or `finish(strokes)` makes them so on the worker thread (a `Preprocessor`'s
        simplification of a raw drawing, its errors the request's)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_started()
        self._queue.put((strokes, finish, loop, future))
        return await future

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="nnlab-guesser", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in items)
            jobs = [item for item in items if item is not None]
            if jobs:
                self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list) -> None:
        ready, drawings = [], []
        for strokes, finish, loop, future in jobs:
            try:
                drawings.append(strokes if finish is None else finish(strokes))
                ready.append((loop, future))
            except Exception as exc:  # noqa: BLE001 - handed to the request that sent the drawing
                loop.call_soon_threadsafe(_settle, future, None, exc)
        if not drawings:
            return
        try:
            probs = self.model.probabilities(drawings)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            for loop, future in ready:
                loop.call_soon_threadsafe(_settle, future, None, exc)
            return
        by_loop: dict = {}  # one wake-up of each event loop for the whole batch, not one per request
        for (loop, future), p in zip(ready, probs, strict=True):
            by_loop.setdefault(loop, []).append((future, p))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(settled: list) -> None:
    for future, result in settled:
        _settle(future, result, None)


def _settle(future, result, exc) -> None:
    if future.cancelled():  # the client went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
