"""The one in-memory model of a Quick, Draw! drawing, and its packed batch form.

A drawing is a list of strokes; a stroke is an array of shape (n, 2) holding x, y,
or (n, 3) holding x, y, t (milliseconds since the drawing's first point, raw data
only). Simplified drawings have integer coordinates in 0..255; raw ones are floats.

A `StrokeBatch` packs many drawings into flat arrays (the stroke store's layout), so
that renderers and the store exchange whole batches without Python loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Stroke = np.ndarray


@dataclass
class Drawing:
    """One drawing with Google's metadata (fields absent in a format keep their defaults)."""

    strokes: list[Stroke]
    word: str | None = None
    key_id: int = -1
    countrycode: str = ""
    recognized: bool = True
    timestamp: str = ""

    @property
    def has_time(self) -> bool:
        return bool(self.strokes) and self.strokes[0].shape[1] >= 3

    @property
    def num_points(self) -> int:
        return sum(len(s) for s in self.strokes)


@dataclass
class StrokeBatch:
    """Drawings packed flat: stroke s of the batch is points[stroke_ptr[s]:stroke_ptr[s+1]],
    drawing d owns strokes drawing_ptr[d]:drawing_ptr[d+1]."""

    points: np.ndarray  # (P, 2) float32 (or uint8 for simplified data)
    stroke_ptr: np.ndarray  # (S + 1,) int64
    drawing_ptr: np.ndarray  # (B + 1,) int64
    time: np.ndarray | None = field(default=None)  # (P,) float32 milliseconds, raw data only

    def __len__(self) -> int:
        return len(self.drawing_ptr) - 1

    @classmethod
    def from_drawings(cls, drawings: Sequence[Drawing | Sequence[Stroke]]) -> StrokeBatch:
        """Pack drawings (or bare stroke lists); keeps time only when every drawing has it."""
        stroke_lists = [d.strokes if isinstance(d, Drawing) else d for d in drawings]
        strokes = [np.asarray(s) for strokes in stroke_lists for s in strokes]
        drawing_ptr = np.zeros(len(stroke_lists) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in stroke_lists], out=drawing_ptr[1:])
        stroke_ptr = np.zeros(len(strokes) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in strokes], out=stroke_ptr[1:])
        if strokes:
            flat = np.concatenate(strokes).astype(np.float32, copy=False)
        else:
            flat = np.zeros((0, 2), dtype=np.float32)
        has_time = flat.ndim == 2 and flat.shape[1] >= 3 and all(s.shape[1] >= 3 for s in strokes)
        return cls(points=np.ascontiguousarray(flat[:, :2]), stroke_ptr=stroke_ptr,
                   drawing_ptr=drawing_ptr,
                   time=np.ascontiguousarray(flat[:, 2]) if has_time else None)

    def take(self, indices: Sequence[int] | np.ndarray) -> StrokeBatch:
        """Drawings `indices` (in that order) as a batch of their own, gathered with array indexing only."""
        return gather(self.points, self.stroke_ptr, self.drawing_ptr, self.time, indices)


def gather(points: np.ndarray, stroke_ptr: np.ndarray, drawing_ptr: np.ndarray, time: np.ndarray | None,
           indices: Sequence[int] | np.ndarray) -> StrokeBatch:
    """Drawings `indices` of packed arrays (a batch's, or a memory-mapped store's) as a StrokeBatch.

    Negative indices count from the end; an index out of range is an IndexError."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(drawing_ptr) - 1
    if len(idx) and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"drawing index out of range for {n} drawings")
    idx = np.where(idx < 0, idx + n, idx)
    d0 = np.asarray(drawing_ptr[idx])
    d1 = np.asarray(drawing_ptr[idx + 1])
    nstrokes = d1 - d0
    strokes = _ranges(d0, nstrokes)
    lens = np.asarray(stroke_ptr[strokes + 1]) - np.asarray(stroke_ptr[strokes])
    p0 = np.asarray(stroke_ptr[d0])
    p1 = np.asarray(stroke_ptr[d1])
    pidx = _ranges(p0, p1 - p0)
    new_stroke_ptr = np.zeros(len(strokes) + 1, np.int64)
    np.cumsum(lens, out=new_stroke_ptr[1:])
    new_drawing_ptr = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(nstrokes, out=new_drawing_ptr[1:])
    return StrokeBatch(points=np.asarray(points[pidx]), stroke_ptr=new_stroke_ptr, drawing_ptr=new_drawing_ptr,
                       time=None if time is None else np.asarray(time[pidx]))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[k], starts[k] + lengths[k]) without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.repeat(np.asarray(starts, np.int64) - offsets, lengths) + np.arange(total, dtype=np.int64)


class StrokeSource(Protocol):
    """Anything that serves drawings as packed batches by index: a `StrokeStore`, or the drawings
    of an input file (`nnlab.inference.kaggle.drawing_rows`). Training, prediction and sample grids read
    drawings through this one interface."""

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray) -> StrokeBatch: ...


@dataclass
class PackedSource:
    """A StrokeSource over packed drawings or another source, optionally restricted to the drawings
    `subset` (in that order) and with a per-batch transform (e.g. Google's simplification of raw
    drawings) applied as batches are read."""

    drawings: StrokeBatch | StrokeSource
    transform: Callable[[StrokeBatch], StrokeBatch] | None = None
    subset: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.drawings) if self.subset is None else len(self.subset)

    def batch(self, indices: np.ndarray) -> StrokeBatch:
        idx = np.asarray(indices, np.int64) if self.subset is None else self.subset[indices]
        src = self.drawings
        batch = src.take(idx) if isinstance(src, StrokeBatch) else src.batch(idx)
        return self.transform(batch) if self.transform is not None else batch
