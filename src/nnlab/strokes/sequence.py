"""Drawings as point sequences for stroke-sequence models (`data.input = "sequence"`), as in Google's
TensorFlow tutorial "Recurrent Neural Networks for Drawing Classification".

Each drawing becomes a (T, 5) float32 sequence, one row per point in drawing order:

==========  ================================================================================
column      meaning
==========  ================================================================================
0, 1        dx, dy: the step from the previous point (from the origin for the first), / 255
2           pen lift: 1 at the last point of each stroke
3           dt: seconds since the previous point (0 without time)
4           valid: 1 for a point, 0 for the padding after the last one
==========  ================================================================================

Coordinates are Google's simplified frame (0..255). A drawing longer than `max_points` keeps
`max_points` points evenly spread along it (its first and last included; a pen lift is kept where a
stroke ends between two kept points). A batch is padded to its longest drawing; the valid column
carries the lengths into the model, so one tensor goes through loaders, DDP and ONNX alike.
"""

from __future__ import annotations

import numpy as np

from nnlab.strokes.drawing import StrokeBatch

FEATURES = 5  # dx, dy, pen lift, dt, valid
SIDE = 255.0


def sequence_input(batch: StrokeBatch, max_points: int) -> np.ndarray:
    """float32 (B, T, 5) sequences of a batch, T = the longest drawing (at most `max_points`)."""
    n = len(batch)
    npts = np.diff(batch.stroke_ptr[batch.drawing_ptr]).astype(np.int64)  # points per drawing
    lengths = np.minimum(npts, max_points)
    out = np.zeros((n, max(int(lengths.max(initial=0)), 1), FEATURES), np.float32)
    if not npts.sum():
        return out
    stroke_len = np.diff(batch.stroke_ptr)
    last_of_stroke = np.zeros(len(batch.points), bool)
    last_of_stroke[batch.stroke_ptr[1:][stroke_len > 0] - 1] = True
    stroke_of = np.repeat(np.arange(len(stroke_len)), stroke_len)
    starts = batch.stroke_ptr[batch.drawing_ptr[:-1]]
    xy = batch.points[:, :2].astype(np.float32)
    t = batch.time.astype(np.float64) if batch.time is not None else None
    for d in range(n):
        m = int(npts[d])
        if not m:
            continue
        idx = starts[d] + (np.arange(m) if m <= max_points
                           else np.round(np.linspace(0, m - 1, max_points)).astype(np.int64))
        k = len(idx)
        steps = np.diff(xy[idx], axis=0, prepend=np.zeros((1, 2), np.float32))
        out[d, :k, 0:2] = steps / SIDE
        # a pen lift where this kept point ends a stroke, or the next kept point is on another stroke
        lift = last_of_stroke[idx].copy()
        lift[:-1] |= stroke_of[idx[1:]] != stroke_of[idx[:-1]]
        lift[-1] = True
        out[d, :k, 2] = lift
        if t is not None:
            out[d, 1:k, 3] = np.diff(t[idx]) / 1000.0
        out[d, :k, 4] = 1.0
    return out
