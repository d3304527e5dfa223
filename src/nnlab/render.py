"""Strokes -> images: a batch rasteriser with three encodings.

`render` draws a whole batch of drawings in one call of a numba kernel over the packed
`StrokeBatch` arrays, directly at the target size with sub-pixel coordinates (no draw at
256 then resize). Every segment is a capsule (a thick line with round caps, like
`cv2.line` with thickness > 1); a pixel's ink is the capsule's coverage of the pixel,
estimated from the distance between the pixel centre and the segment, and only pixels
in the segment's band are visited.

Coordinates are Google's simplified space (0..255, the centre of pixel x of a 256 px
canvas is at x); `fit_to_canvas` brings raw drawings there first.

Encodings (`ENCODINGS`):

- ``binary``: one channel, ink 255.
- ``time-decay``: one channel, stroke t drawn with ``255 - min(t, 10) * 13`` and later
  strokes over earlier ones, as the Kaggle reference ``draw_cv2`` does.
- ``order-velocity-time``: three channels, all with ink in 32..255 so that every channel
  shows the whole drawing: stroke order (255 for the first stroke down to 32 for the
  last), pen speed per segment (relative to the drawing's mean speed; 2x the mean or
  faster saturates) and elapsed time (32 at the first point, 255 at the last). Speed and
  time come from raw drawings' t in milliseconds; without time they fall back to point
  order (one time step per point).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from nnlab.data.drawing import Drawing, Stroke, StrokeBatch
from nnlab.errors import ConfigError

ENCODINGS: dict[str, int] = {"binary": 1, "time-decay": 1, "order-velocity-time": 3}
_ENCODING_IDS = {"binary": 0, "time-decay": 1, "order-velocity-time": 2}

CANVAS = 256  # Google's simplified drawings live in 0..255
REFERENCE_LINE_WIDTH = 6.0  # the Kaggle reference's cv2.line thickness at 256 px
INK_LOW = 32.0  # the faintest ink of the order-velocity-time channels


def default_line_width(size: int) -> float:
    """The reference's 6 px at 256, in output pixels."""
    return REFERENCE_LINE_WIDTH * size / CANVAS


def as_batch(drawings: StrokeBatch | Sequence[Drawing | Sequence[Stroke]]) -> StrokeBatch:
    """A StrokeBatch as is, or drawings / stroke lists packed into one."""
    if isinstance(drawings, StrokeBatch):
        return drawings
    return StrokeBatch.from_drawings(list(drawings))


def render(drawings: StrokeBatch | Sequence[Drawing | Sequence[Stroke]], size: int = 64,
           encoding: str = "binary", line_width: float | None = None, antialias: bool = True,
           padding: float = 0.0) -> np.ndarray:
    """Draw a batch of drawings; returns uint8 (B, C, size, size), ink bright on 0.

    drawings: a StrokeBatch (fast path: no Python work per drawing) or a sequence of
        Drawing / stroke lists, in the 0..255 coordinate space.
    size: output side in pixels.
    encoding: one of ENCODINGS (C = 1 for binary and time-decay, 3 for order-velocity-time).
    line_width: stroke width in output pixels; default 6 * size / 256 like the reference.
        With antialias=False, widths under 1 px are drawn 1 px wide so lines never break.
    antialias: coverage-weighted edges; False gives hard edges (a pixel is ink when its
        centre lies within line_width / 2 of the segment).
    padding: margin on each side as a fraction of the image side (0 <= padding < 0.5, as
        `data.padding` in the config); the 0..255 square is scaled into
        size * (1 - 2 * padding) pixels.
    """
    if encoding not in ENCODINGS:
        raise ConfigError(f"render: unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}")
    if int(size) != size or size < 1:
        raise ConfigError(f"render: size must be a positive integer, got {size!r}")
    size = int(size)
    if not 0.0 <= padding < 0.5:
        raise ConfigError(f"render: padding is a fraction of the image side in [0, 0.5), got {padding!r}")
    if line_width is None:
        line_width = default_line_width(size)
    if not line_width > 0:
        raise ConfigError(f"render: line_width must be positive, got {line_width!r}")
    batch = as_batch(drawings)
    points = np.ascontiguousarray(batch.points[:, :2], dtype=np.float32)
    has_time = batch.time is not None
    time = (np.ascontiguousarray(batch.time, dtype=np.float32) if has_time
            else np.zeros(0, dtype=np.float32))
    out = np.zeros((len(batch), ENCODINGS[encoding], size, size), dtype=np.uint8)
    table, inv_step, reach = _coverage_table(float(line_width) / 2.0, bool(antialias))
    margin = padding * size
    scale = (size - 2.0 * margin) / CANVAS
    _render_kernel(points, time, has_time, np.ascontiguousarray(batch.stroke_ptr, dtype=np.int64),
                   np.ascontiguousarray(batch.drawing_ptr, dtype=np.int64),
                   out.reshape(len(batch), out.shape[1], size * size), _ENCODING_IDS[encoding],
                   float(scale), float(margin), table, float(inv_step), float(reach))
    return out


def fit_to_canvas(batch: StrokeBatch, margin: float = 0.0) -> StrokeBatch:
    """Each drawing moved to the top-left corner and scaled so its larger side spans
    margin..255-margin (Google's simplification frame); for raw drawings. Vectorised."""
    b = len(batch)
    counts = np.diff(batch.stroke_ptr[batch.drawing_ptr])  # points per drawing
    pts = batch.points.astype(np.float32)
    if len(pts) == 0:
        return StrokeBatch(pts, batch.stroke_ptr.copy(), batch.drawing_ptr.copy(), batch.time)
    starts = np.minimum(batch.stroke_ptr[batch.drawing_ptr[:-1]], len(pts) - 1)
    lo = np.minimum.reduceat(pts, starts, axis=0)
    hi = np.maximum.reduceat(pts, starts, axis=0)
    extent = np.where(counts > 0, (hi - lo).max(axis=1), 1.0)
    factor = (CANVAS - 1 - 2 * margin) / np.maximum(extent, 1e-6)
    owner = np.repeat(np.arange(b), counts)
    pts = (pts - lo[owner]) * factor[owner, None] + margin
    return StrokeBatch(pts.astype(np.float32), batch.stroke_ptr.copy(), batch.drawing_ptr.copy(),
                       None if batch.time is None else batch.time.copy())


_LUT_BINS = 1024


def _coverage_table(half_width: float, antialias: bool) -> tuple[np.ndarray, float, float]:
    """Ink (0..255) as a function of the squared distance from a pixel centre to the
    segment, tabulated so the kernel needs no square root: (table, bins per unit of squared
    distance, reach = the farthest distance with any ink). The last entry is 0 (beyond)."""
    if not antialias:
        hw = max(half_width, 0.5)  # never thinner than a pixel, so lines stay connected
        # two bins: ink iff d <= hw (the tiny slack keeps centres exactly at hw inside)
        return np.array([255, 0, 0], dtype=np.uint8), 1.0 / (hw * hw * (1.0 + 1e-9)), hw
    reach = half_width + 0.5
    step = reach * reach / _LUT_BINS
    dist = np.sqrt((np.arange(_LUT_BINS) + 0.5) * step)
    # area of the 1 px box [d - 0.5, d + 0.5] inside the band [-hw, hw]: exact for a pixel
    # straddling a straight edge, and right for lines thinner than a pixel
    cov = np.minimum(dist + 0.5, half_width) - np.maximum(dist - 0.5, -half_width)
    table = np.zeros(_LUT_BINS + 2, dtype=np.uint8)
    table[:-2] = np.round(np.clip(cov, 0.0, 1.0) * 255.0)
    return table, 1.0 / step, reach


# error_model="numpy": no Python-style zero-division checks in the hot loops; indices are
# cast to unsigned where they cannot be negative so numba skips its wraparound fix-up.
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=True)
_U = np.uint64


@numba.njit(**_JIT)
def _render_kernel(points, time, has_time, stroke_ptr, drawing_ptr, out, encoding, scale, offset,
                   table, inv_step, reach):
    """Draw every drawing into out (B, C, size*size), which must be zero.

    Strokes are grouped in layers of one colour (the whole drawing for binary, one stroke
    for time-decay up to the 11th, after which the colour stays the same, and one stroke
    for order-velocity-time). A layer's segments write coverage into `cov`, keeping the
    maximum so that its own joints do not add up; then the layer is painted over the image
    ("over" compositing, later strokes on top as with cv2.line) on the row spans it
    touched, and `cov` is cleared there."""
    n_draw = out.shape[0]
    n_chan = out.shape[1]
    npix = out.shape[2]
    size = int(np.sqrt(npix) + 0.5)
    multi = encoding == 2  # colours vary along the stroke: keep them per pixel
    cov = np.zeros(npix, dtype=np.uint8)
    colour = np.zeros((n_chan, npix if multi else 1), dtype=np.uint8)
    row_lo = np.full(size, size, dtype=np.int64)  # the row spans the current layer touched
    row_hi = np.full(size, -1, dtype=np.int64)
    col0 = np.zeros(n_chan, dtype=np.float64)  # colour at the segment's start
    col1 = np.zeros(n_chan, dtype=np.float64)  # ... and at its end (time is interpolated)
    max_bin = (table.shape[0] - 1) / inv_step  # farther centres fall in the last, empty bins
    for d in range(n_draw):
        s_first = drawing_ptr[d]
        s_last = drawing_ptr[d + 1]
        n_strokes = s_last - s_first
        if n_strokes <= 0:
            continue
        p_first = stroke_ptr[s_first]
        p_last = stroke_ptr[s_last]
        mean_speed = 1.0
        t0 = 0.0
        t_span = 0.0
        if multi:  # per-drawing statistics of order-velocity-time
            total_len = 0.0
            total_dt = 0.0
            for s in range(s_first, s_last):
                for p in range(stroke_ptr[s], stroke_ptr[s + 1] - 1):
                    dx = points[p + 1, 0] - points[p, 0]
                    dy = points[p + 1, 1] - points[p, 1]
                    total_len += np.sqrt(dx * dx + dy * dy)
                    total_dt += max(time[p + 1] - time[p], 1.0) if has_time else 1.0
            if total_len > 0.0:
                mean_speed = total_len / total_dt
            if has_time:
                t0 = time[p_first]
                for p in range(p_first, p_last):
                    t_span = max(t_span, time[p] - t0)
            else:
                t_span = p_last - p_first - 1.0
        j_min = size
        j_max = -1
        for s in range(s_first, s_last):
            k = s - s_first  # stroke index within the drawing
            if encoding == 0:
                col0[0] = 255.0
            elif encoding == 1:
                col0[0] = 255.0 - min(k, 10) * 13.0
            else:
                col0[0] = 255.0 if n_strokes == 1 else 255.0 - (255.0 - INK_LOW) * k / (n_strokes - 1)
            col1[0] = col0[0]
            # a layer that starts on a blank image is drawn straight into it: the maximum
            # of ink * coverage over its segments is then exactly the composite
            direct = not multi and (encoding == 0 or k == 0)
            target = out[d, 0] if direct else cov
            ink = np.uint16(col0[0] + 0.5) if direct else np.uint16(255)
            a = stroke_ptr[s]
            b = stroke_ptr[s + 1]
            for q in range(max(b - a - 1, 1) if b > a else 0):  # a one-point stroke is a dot
                p0 = a + q
                p1 = min(p0 + 1, b - 1)
                xa = points[p0, 0]
                ya = points[p0, 1]
                xb = points[p1, 0]
                yb = points[p1, 1]
                if multi:
                    seg = np.sqrt((xb - xa) * (xb - xa) + (yb - ya) * (yb - ya))
                    if has_time:
                        dt = max(time[p1] - time[p0], 1.0)
                        f0 = time[p0] - t0
                        f1 = time[p1] - t0
                    else:
                        dt = 1.0
                        f0 = p0 - p_first
                        f1 = p1 - p_first
                    if t_span > 0.0:
                        f0 /= t_span
                        f1 /= t_span
                    else:
                        f0 = 0.0
                        f1 = 0.0
                    col0[1] = INK_LOW + (255.0 - INK_LOW) * min(seg / dt / (2.0 * mean_speed), 1.0)
                    col1[1] = col0[1]
                    col0[2] = INK_LOW + (255.0 - INK_LOW) * f0
                    col1[2] = INK_LOW + (255.0 - INK_LOW) * f1
                xa = (xa + 0.5) * scale + offset
                ya = (ya + 0.5) * scale + offset
                xb = (xb + 0.5) * scale + offset
                yb = (yb + 0.5) * scale + offset
                if multi:
                    lo, hi = _segment(cov, ink, True, colour, row_lo, row_hi, size, xa, ya, xb,
                                      yb, table, inv_step, max_bin, reach, col0, col1)
                else:
                    lo, hi = _segment(target, ink, not direct, None, row_lo, row_hi, size, xa,
                                      ya, xb, yb, table, inv_step, max_bin, reach, col0, col1)
                j_min = min(j_min, lo)
                j_max = max(j_max, hi)
            # the layer ends here unless the next stroke has the same colour
            if not direct and (s == s_last - 1 or encoding == 2 or k < 10):
                for j in range(_U(max(j_min, 0)), _U(min(j_max, size - 1) + 1)):
                    if row_hi[j] >= row_lo[j]:
                        start = j * size + row_lo[j]
                        stop = j * size + row_hi[j] + 1
                        if multi:
                            for ch in range(n_chan):
                                _blend_varying(out[d, ch], cov, colour[ch], start, stop)
                            _clear(cov, start, stop)
                        else:  # one channel
                            _blend(out[d, 0], cov, np.uint16(col0[0] + 0.5), start, stop)
                        row_lo[j] = size
                        row_hi[j] = -1
                j_min = size
                j_max = -1


@numba.njit(**_JIT)
def _segment(cov, ink, spans, colour, row_lo, row_hi, size, x0, y0, x1, y1, table, inv_step,
             max_bin, reach, col0, col1):
    """Coverage of one capsule into cov, keeping the maximum with what is there: times
    ink / 255 when colour is None, else with the colours col0 -> col1 interpolated along
    the segment into colour where the segment wins. Widens the row spans when asked and
    returns the rows it covers. Pixel (i, j) has its centre at (i + 0.5, j + 0.5); per row
    only the centres within `reach` of the segment's infinite line and bounding box are
    visited. (Not inlined: a small function of its own keeps the hot loops in registers.)"""
    dx = x1 - x0
    dy = y1 - y0
    len2 = dx * dx + dy * dy
    inv_len2 = 1.0 / len2 if len2 > 1e-12 else 0.0
    du = dx * inv_len2  # change of the projection parameter per pixel along a row
    j_lo = max(int(np.ceil(min(y0, y1) - reach - 0.5)), 0)
    j_hi = min(int(np.floor(max(y0, y1) + reach - 0.5)), size - 1)
    box_lo = min(x0, x1) - reach
    box_hi = max(x0, x1) + reach
    slanted = abs(dy) > 1e-6 * (abs(dx) + 1.0)
    slope = dx / dy if slanted else 0.0
    half = reach * np.sqrt(len2) / abs(dy) if slanted else 0.0
    for j in range(_U(j_lo), _U(j_hi + 1)):
        cy = j + 0.5 - y0
        lo = box_lo
        hi = box_hi
        if slanted:
            mid = x0 + slope * cy
            lo = max(lo, mid - half)
            hi = min(hi, mid + half)
        i_lo = max(int(np.ceil(lo - 0.5)), 0)
        i_hi = min(int(np.floor(hi - 0.5)), size - 1)
        if i_lo > i_hi:
            continue
        if spans:
            row_lo[j] = min(row_lo[j], i_lo)
            row_hi[j] = max(row_hi[j], i_hi)
        cx = i_lo + 0.5 - x0
        u = (cx * dx + cy * dy) * inv_len2
        p = _U(j * size + i_lo)
        if colour is None:
            for _ in range(i_lo, i_hi + 1):
                uc = min(max(u, 0.0), 1.0)
                ex = cx - uc * dx
                ey = cy - uc * dy
                x = np.uint16(table[_U(np.int64(min(ex * ex + ey * ey, max_bin) * inv_step))]) * ink
                x += np.uint16(128)
                cov[p] = max(cov[p], np.uint8((x + (x >> np.uint16(8))) >> np.uint16(8)))
                cx += 1.0
                u += du
                p += _U(1)
        else:
            for _ in range(i_lo, i_hi + 1):
                uc = min(max(u, 0.0), 1.0)
                ex = cx - uc * dx
                ey = cy - uc * dy
                c = table[_U(np.int64(min(ex * ex + ey * ey, max_bin) * inv_step))]
                if c > 0 and c >= cov[p]:  # later segments of the stroke win ties
                    cov[p] = c
                    for ch in range(colour.shape[0]):
                        colour[ch, p] = np.uint8(col0[ch] + (col1[ch] - col0[ch]) * uc + 0.5)
                cx += 1.0
                u += du
                p += _U(1)
    return j_lo, j_hi


# The blends are plain loops over contiguous bytes in uint16 arithmetic, which LLVM
# vectorises: round((v * (255 - c) + ink * c) / 255) = (x + (x >> 8)) >> 8, x = ... + 128.
# The one-channel blend also clears the layer's coverage.
@numba.njit(inline="always", **_JIT)
def _blend(img, cov, ink, start, stop):
    for p in range(_U(start), _U(stop)):
        c = np.uint16(cov[p])
        x = np.uint16(np.uint16(img[p]) * (np.uint16(255) - c) + ink * c + np.uint16(128))
        img[p] = np.uint8((x + (x >> np.uint16(8))) >> np.uint16(8))
        cov[p] = 0


@numba.njit(inline="always", **_JIT)
def _clear(cov, start, stop):
    for p in range(_U(start), _U(stop)):
        cov[p] = 0


@numba.njit(inline="always", **_JIT)
def _blend_varying(img, cov, ink, start, stop):
    for p in range(_U(start), _U(stop)):
        c = np.uint16(cov[p])
        x = np.uint16(np.uint16(img[p]) * (np.uint16(255) - c) + np.uint16(ink[p]) * c
                      + np.uint16(128))
        img[p] = np.uint8((x + (x >> np.uint16(8))) >> np.uint16(8))
