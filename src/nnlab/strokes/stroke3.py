"""Stroke-3, sketch-rnn's form of a drawing: one row (dx, dy, pen_lift) per point.

Row k holds the offset of point k from point k - 1 (the first point's from the origin, as
magenta's `lines_to_strokes` writes it) and 1 when the pen lifts after that point (the stroke
ends), so absolute strokes -> stroke-3 -> absolute strokes is exact for integer coordinates.
The packed converters work on many drawings at once, without a Python loop per drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnlab.strokes.drawing import Stroke


def to_stroke3(strokes: Sequence[Stroke]) -> np.ndarray:
    """(n, 3) int16 stroke-3 rows of a drawing's integer (x, y) strokes (a t column is ignored).

    ValueError when an offset does not fit int16 (sketch-rnn's dtype)."""
    pts = [np.asarray(s)[:, :2] for s in strokes if len(s)]
    points = np.concatenate(pts) if pts else np.zeros((0, 2), np.int64)
    stroke_ptr = np.concatenate([[0], np.cumsum([len(p) for p in pts], dtype=np.int64)])
    return packed_to_stroke3(points, stroke_ptr, np.array([0, len(pts)], np.int64))[0]


def from_stroke3(rows: np.ndarray) -> list[np.ndarray]:
    """The absolute int64 (x, y) strokes of one drawing's stroke-3 rows (a last stroke without its
    pen lift ends with the rows)."""
    points, stroke_len, _ = stroke3_to_packed([rows])
    return np.split(points, np.cumsum(stroke_len)[:-1]) if len(points) else []


def stroke3_to_packed(drawings: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Many drawings' stroke-3 rows -> (points (P, 2) int64 absolute, stroke_len (S,), num_strokes (N,)),
    the packed layout of `nnlab.strokes.drawing.StrokeBatch` (a stroke ends at a pen lift or at the
    drawing's last row)."""
    lengths = np.array([len(d) for d in drawings], np.int64)
    rows = np.concatenate([np.asarray(d, np.int64).reshape(-1, 3) for d in drawings]) if lengths.sum() else \
        np.zeros((0, 3), np.int64)
    return packed_rows_to_points(rows, lengths)


def packed_rows_to_points(rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`stroke3_to_packed` of the drawings' rows concatenated ((R, 3) int64) and their row counts."""
    rows = np.asarray(rows, np.int64)
    lengths = np.asarray(lengths, np.int64)
    if not len(rows):
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(len(lengths), np.int64)
    starts = np.cumsum(lengths) - lengths
    csum = np.cumsum(rows[:, :2], axis=0)
    # each drawing's offsets sum from its own origin: subtract the running sum before its first row
    before = np.vstack([np.zeros((1, 2), np.int64), csum])[starts]
    points = csum - np.repeat(before, lengths, axis=0)
    end = rows[:, 2] != 0
    end[np.cumsum(lengths)[lengths > 0] - 1] = True
    ends = np.flatnonzero(end)
    stroke_len = np.diff(np.concatenate([[-1], ends]))
    drawing_of_stroke = np.searchsorted(np.cumsum(lengths), ends, side="right")
    num_strokes = np.bincount(drawing_of_stroke, minlength=len(lengths)).astype(np.int64)
    return points, stroke_len.astype(np.int64), num_strokes


def packed_to_stroke3(points: np.ndarray, stroke_ptr: np.ndarray, drawing_ptr: np.ndarray) -> list[np.ndarray]:
    """A packed batch of integer drawings (`StrokeBatch` arrays) -> one (n, 3) int16 array per drawing."""
    pts = np.asarray(points)[:, :2].astype(np.int64)
    stroke_ptr = np.asarray(stroke_ptr, np.int64)
    drawing_ptr = np.asarray(drawing_ptr, np.int64)
    rows = np.zeros((len(pts), 3), np.int64)
    rows[:, :2] = np.diff(pts, axis=0, prepend=np.zeros((1, 2), np.int64))
    first = stroke_ptr[drawing_ptr[:-1]]  # each drawing's first point is an offset from the origin
    has = first < stroke_ptr[drawing_ptr[1:]]
    rows[first[has], :2] = pts[first[has]]
    ends = stroke_ptr[1:][stroke_ptr[1:] > stroke_ptr[:-1]] - 1
    rows[ends, 2] = 1
    if len(rows) and np.abs(rows[:, :2]).max() > np.iinfo(np.int16).max:
        raise ValueError("an offset does not fit stroke-3's int16")
    rows = rows.astype(np.int16)
    bounds = stroke_ptr[drawing_ptr]
    return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
