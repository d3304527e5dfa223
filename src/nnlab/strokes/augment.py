"""Stroke-level augmentation: random affine, stroke dropout and point jitter on a packed
`StrokeBatch`, before drawing (so the lines keep their width and stay sharp).

Everything is vectorised over the batch (no Python loop per drawing) and driven by a
`numpy.random.Generator`, so a batch augmented twice with generators from the same seed
comes out the same. Labels are not touched: only points move or go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnlab.errors import ConfigError
from nnlab.strokes.drawing import StrokeBatch
from nnlab.strokes.render import drawing_bounds


@dataclass
class StrokeAugment:
    """Parameters of the stroke augmentation; a field at 0 switches its part off.

    Coordinates are the 0..255 canvas of simplified drawings. The affine part turns,
    scales and shears each drawing about the centre of its bounding box, then shifts it.
    """

    rotation: float = 12.0  # degrees, uniform in [-rotation, rotation]
    scale: tuple[float, float] = (0.85, 1.1)  # uniform isotropic scale range
    shear: float = 8.0  # degrees of horizontal shear, uniform in [-shear, shear]
    translate: float = 0.06  # fraction of the canvas, uniform in [-translate, translate] per axis
    flip: float = 0.0  # probability of a left-right mirror
    stroke_dropout: float = 0.1  # probability of dropping each stroke (one always stays)
    jitter: float = 0.8  # standard deviation of Gaussian noise per point, canvas pixels

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(f"StrokeAugment.scale must be 0 < low <= high, got {self.scale!r}")
        for name in ("rotation", "shear", "translate", "jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"StrokeAugment.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"StrokeAugment.flip must be a probability in [0, 1], got {self.flip!r}")
        if not 0.0 <= self.stroke_dropout < 1.0:
            raise ConfigError("StrokeAugment.stroke_dropout must be a probability in [0, 1), "
                              f"got {self.stroke_dropout!r}")

    def __call__(self, batch: StrokeBatch, rng: np.random.Generator) -> StrokeBatch:
        """A new, augmented batch (float32 points); the input is left as it was.

        The random numbers are drawn in a fixed order whatever the parameters' values, so
        a given (batch, seed) always gives the same result."""
        n_draw = len(batch)
        n_strokes = len(batch.stroke_ptr) - 1
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation, n_draw))
        scale = rng.uniform(self.scale[0], self.scale[1], n_draw)
        shear = np.tan(np.deg2rad(rng.uniform(-self.shear, self.shear, n_draw)))
        shift = rng.uniform(-self.translate, self.translate, (n_draw, 2)) * 256.0
        mirror = np.where(rng.random(n_draw) < self.flip, -1.0, 1.0)
        keep_draw = rng.random(n_strokes)  # stroke s stays when >= stroke_dropout
        rescue = rng.random(n_draw)
        noise = rng.standard_normal((len(batch.points), 2))

        pts = batch.points.astype(np.float64)
        lo, hi, counts = drawing_bounds(batch)
        owner = np.repeat(np.arange(n_draw), counts)
        centre = (lo + hi) / 2.0
        # M = rotation @ shear @ (scale, with the mirror on x), applied about the centre
        cos, sin = np.cos(angle), np.sin(angle)
        sx, sy = scale * mirror, scale
        m00, m01 = cos * sx, (cos * shear - sin) * sy
        m10, m11 = sin * sx, (sin * shear + cos) * sy
        rel = pts - centre[owner]
        x = m00[owner] * rel[:, 0] + m01[owner] * rel[:, 1]
        y = m10[owner] * rel[:, 0] + m11[owner] * rel[:, 1]
        out = np.column_stack([x, y]) + (centre + shift)[owner] + self.jitter * noise
        moved = StrokeBatch(out.astype(np.float32), batch.stroke_ptr, batch.drawing_ptr, batch.time)
        return _drop_strokes(moved, keep_draw >= self.stroke_dropout, rescue)


def _drop_strokes(batch: StrokeBatch, keep: np.ndarray, rescue: np.ndarray) -> StrokeBatch:
    """Keep the strokes marked in keep; a drawing that would lose all its strokes keeps
    one of them, chosen by rescue (uniform in [0, 1) per drawing)."""
    if keep.all():
        return batch
    n_draw = len(batch.drawing_ptr) - 1
    strokes_per = np.diff(batch.drawing_ptr)
    owner = np.repeat(np.arange(n_draw), strokes_per)
    kept_per = np.bincount(owner[keep], minlength=n_draw)
    lost = np.flatnonzero((kept_per == 0) & (strokes_per > 0))
    keep = keep.copy()
    keep[batch.drawing_ptr[lost] + (rescue[lost] * strokes_per[lost]).astype(np.int64)] = True
    kept_per[lost] = 1
    lengths = np.diff(batch.stroke_ptr)
    point_mask = np.repeat(keep, lengths)
    stroke_ptr = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[keep], out=stroke_ptr[1:])
    drawing_ptr = np.zeros(n_draw + 1, dtype=np.int64)
    np.cumsum(kept_per, out=drawing_ptr[1:])
    return StrokeBatch(batch.points[point_mask], stroke_ptr, drawing_ptr,
                       None if batch.time is None else batch.time[point_mask])
