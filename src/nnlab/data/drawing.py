"""The one in-memory model of a Quick, Draw! drawing, and its packed batch form.

A drawing is a list of strokes; a stroke is an array of shape (n, 2) holding x, y,
or (n, 3) holding x, y, t (milliseconds since the drawing's first point, raw data
only). Simplified drawings have integer coordinates in 0..255; raw ones are floats.

A `StrokeBatch` packs many drawings into flat arrays (the stroke store's layout), so
that renderers and the store exchange whole batches without Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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

    def drawing(self, d: int) -> list[Stroke]:
        """Strokes of drawing d as (n, 2) or (n, 3) arrays (views where possible)."""
        out = []
        for s in range(self.drawing_ptr[d], self.drawing_ptr[d + 1]):
            a, b = self.stroke_ptr[s], self.stroke_ptr[s + 1]
            xy = self.points[a:b]
            out.append(xy if self.time is None else np.column_stack([xy, self.time[a:b]]))
        return out
