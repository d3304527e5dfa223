"""Strokes -> images: a batch rasteriser with three encodings.

`render` draws a whole batch of drawings in one call of a numba kernel over the packed
`StrokeBatch` arrays, directly at the target size with sub-pixel coordinates (no draw at
256 then resize), with no Python work per drawing. Every segment is a capsule (a thick
line with round caps, like `cv2.line` with thickness > 1); a pixel's ink is the share of
the pixel the capsule covers, computed from the distance between the pixel centre and the
segment (exact where a straight edge crosses the pixel). Only the pixels near each segment
are visited, 8 at a time so that the compiler emits vector instructions; the kernel is
single-threaded and releases the GIL, and runs as well in DataLoader worker processes.

Note on width: `cv2.line(..., thickness=6)` fills every pixel its polygon touches, about
7 px across; our 6 px line has the same extent once its antialiased edges are counted
(mean ink IoU 0.98 with the reference at 256 px on the shared drawings).

Coordinates are Google's simplified space (0..255, the centre of pixel x of a 256 px
canvas is at x); raw drawings are brought there by Google's simplification (`simplify`).

Encodings (`ENCODINGS`):

- ``binary``: one channel, ink 255 (the drawing's coverage: the maximum over strokes).
- ``time-decay``: one channel, stroke t drawn with ``255 - min(t, 10) * 13`` and later
  strokes over earlier ones, as the Kaggle reference ``draw_cv2`` does.
- ``order-velocity-time``: three channels, all with ink in 32..255 so that every channel
  shows the whole drawing: stroke order (255 for the first stroke down to 32 for the
  last), pen speed per segment (relative to the drawing's mean speed; 2x the mean or
  faster saturates; with time, averaged over the segment and its two neighbours) and
  elapsed time (32 at the first point, 255 at the last). Speed and time come from raw
  drawings' t in milliseconds; without time they fall back to point order (one time step
  per point, so speed becomes the length of the step).
- ``order-stroke-time``: three channels, ink in 32..255, constant along each stroke: stroke
  order (as above), the stroke's draw time (255 for the drawing's slowest stroke) and the pause
  before it (255 for the drawing's longest hesitation; the first stroke, and drawings without
  time, get 32). Without time, a stroke's draw time is its number of points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from nnlab.errors import ConfigError
from nnlab.strokes.drawing import Drawing, Stroke, StrokeBatch

ENCODINGS: dict[str, int] = {"binary": 1, "time-decay": 1, "order-velocity-time": 3, "order-stroke-time": 3}
_ENCODING_IDS = {"binary": 0, "time-decay": 1, "order-velocity-time": 2, "order-stroke-time": 3}

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
    channels = ENCODINGS[encoding]
    n_out = len(batch) * channels * size * size
    # 8 spare bytes past the end: the kernel's last 8-pixel group may reach past a row.
    # Not zeroed here: the kernel zeroes each image just before drawing it (cache-hot).
    flat = np.empty(n_out + _LANES, dtype=np.uint8)
    half_width = float(line_width) / 2.0
    if not antialias:
        half_width = max(half_width, 0.5)  # never thinner than a pixel, so lines stay connected
    margin = padding * size
    scale = (size - 2.0 * margin) / CANVAS
    _render_kernel(points, time, has_time, np.ascontiguousarray(batch.stroke_ptr, dtype=np.int64),
                   np.ascontiguousarray(batch.drawing_ptr, dtype=np.int64), flat, len(batch),
                   channels, size, _ENCODING_IDS[encoding], float(scale), float(margin),
                   half_width, bool(antialias))
    return flat[:n_out].reshape(len(batch), channels, size, size)


def drawing_bounds(batch: StrokeBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per drawing: the bounding box's low and high corners, (B, 2) float64 each (0 for an
    empty drawing), and the number of points, (B,)."""
    counts = np.diff(batch.stroke_ptr[batch.drawing_ptr])
    lo = np.zeros((len(counts), 2))
    hi = np.zeros((len(counts), 2))
    if len(batch.points):
        pts = batch.points.astype(np.float64)
        starts = np.minimum(batch.stroke_ptr[batch.drawing_ptr[:-1]], len(pts) - 1)
        full = counts > 0
        lo[full] = np.minimum.reduceat(pts, starts, axis=0)[full]
        hi[full] = np.maximum.reduceat(pts, starts, axis=0)[full]
    return lo, hi, counts


# The kernel. Segments are capsules; per image row only the pixel centres within reach of
# the segment's line and bounding box are visited, 8 at a time in float32 so that LLVM
# turns each group into one vector of 8 lanes (lanes past the row's span are masked).
# Indices are cast to unsigned where they cannot be negative, which spares numba's
# wraparound fix-up; error_model="numpy" drops Python's zero-division checks.
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=True)
_U = np.uint64
_LANES = 8


@numba.njit(**_JIT)
def _render_kernel(points, time, has_time, stroke_ptr, drawing_ptr, flat, n_draw, n_chan, size,
                   encoding, scale, offset, half_width, antialias):
    """Draw every drawing into flat (n_draw * n_chan * size * size + 8 bytes; each image is
    zeroed here first, the 8 spare bytes are only ever rewritten with their own value).

    Strokes form layers of one colour: the whole drawing for binary, one stroke for
    time-decay up to the 11th (after which the colour stays the same), one stroke for
    order-velocity-time. A layer that starts on a blank image (binary, and the first
    stroke of time-decay) is drawn straight into it: the maximum of ink x coverage over its
    segments is then exactly the composite. Any other layer first collects its coverage
    in `cov` (the maximum over its segments, so that its own joints do not add up; with
    the colour of the winning segment in `colour` for order-velocity-time), then is
    painted over the image ("over" compositing: later strokes on top, as with cv2.line)
    on the row spans it touched, which clears `cov` again."""
    npix = size * size
    stride = size + _LANES  # cov's rows are padded for the 8-pixel groups
    multi = encoding >= 2  # three channels: a colour per segment (2) or per stroke (3)
    velocity = encoding == 2
    cov = np.zeros(size * stride + _LANES, dtype=np.uint8)
    colour = np.zeros((n_chan, size * stride + _LANES if multi else 1), dtype=np.uint8)
    row_lo = np.full(size, size, dtype=np.int64)  # the row spans the current layer touched
    row_hi = np.full(size, -1, dtype=np.int64)
    col0 = np.zeros(n_chan, dtype=np.float32)  # colour at the segment's start
    col1 = np.zeros(n_chan, dtype=np.float32)  # ... and at its end (time is interpolated)
    hw = np.float32(half_width)
    reach = half_width + 0.5 if antialias else half_width  # farthest centre with any ink
    for d in range(n_draw):
        image = d * n_chan * npix
        flat[image:image + n_chan * npix] = 0
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
        max_dur = 0.0
        max_pause = 0.0
        if encoding == 3:  # per-drawing statistics of order-stroke-time
            for s in range(s_first, s_last):
                a = stroke_ptr[s]
                b = stroke_ptr[s + 1]
                if b > a:
                    max_dur = max(max_dur, _stroke_duration(time, has_time, a, b))
                    if s > s_first and has_time and stroke_ptr[s - 1] < a:
                        max_pause = max(max_pause, time[a] - time[a - 1])
        if velocity:  # per-drawing statistics of order-velocity-time
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
                ink = 255.0
            elif encoding == 1:
                ink = 255.0 - min(k, 10) * 13.0
            else:
                ink = 255.0 if n_strokes == 1 else 255.0 - (255.0 - INK_LOW) * k / (n_strokes - 1)
            col0[0] = ink
            col1[0] = ink
            direct = encoding == 0 or (encoding == 1 and k == 0)
            a = stroke_ptr[s]
            b = stroke_ptr[s + 1]
            for q in range(max(b - a - 1, 1) if b > a else 0):  # a one-point stroke is a dot
                p0 = a + q
                p1 = min(p0 + 1, b - 1)
                xa = points[p0, 0]
                ya = points[p0, 1]
                xb = points[p1, 0]
                yb = points[p1, 1]
                if encoding == 3:
                    dur = _stroke_duration(time, has_time, a, b)
                    pause = time[a] - time[a - 1] if has_time and k > 0 and stroke_ptr[s - 1] < a else 0.0
                    col0[1] = INK_LOW + (255.0 - INK_LOW) * (dur / max_dur if max_dur > 0.0 else 0.0)
                    col0[2] = INK_LOW + (255.0 - INK_LOW) * (pause / max_pause if max_pause > 0.0 else 0.0)
                    col1[1] = col0[1]
                    col1[2] = col0[2]
                elif velocity:
                    if has_time:
                        # speed over the segment and its neighbours: raw timestamps are
                        # coarse, one segment alone gives a flickering channel
                        w0 = max(p0 - 1, a)
                        w1 = min(p1 + 1, b - 1)
                        seg = 0.0
                        for w in range(w0, w1):
                            seg += np.sqrt((points[w + 1, 0] - points[w, 0]) ** 2
                                           + (points[w + 1, 1] - points[w, 1]) ** 2)
                        dt = max(time[w1] - time[w0], 1.0)
                        f0 = time[p0] - t0
                        f1 = time[p1] - t0
                    else:
                        seg = np.sqrt((xb - xa) * (xb - xa) + (yb - ya) * (yb - ya))
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
                if direct:
                    lo, hi = _segment(flat, image, size, False, np.float32(ink), None, col0, col1,
                                      row_lo, row_hi, size, xa, ya, xb, yb, hw, reach, antialias)
                elif multi:
                    lo, hi = _segment(cov, 0, stride, True, np.float32(255.0), colour, col0, col1,
                                      row_lo, row_hi, size, xa, ya, xb, yb, hw, reach, antialias)
                else:
                    lo, hi = _segment(cov, 0, stride, True, np.float32(255.0), None, col0, col1,
                                      row_lo, row_hi, size, xa, ya, xb, yb, hw, reach, antialias)
                j_min = min(j_min, lo)
                j_max = max(j_max, hi)
            # the layer ends here unless the next stroke has the same colour
            if not direct and (s == s_last - 1 or multi or k < 10):
                for j in range(max(j_min, 0), min(j_max, size - 1) + 1):
                    if row_hi[j] >= row_lo[j]:
                        start = j * size + row_lo[j]
                        stop = j * size + row_hi[j] + 1
                        shift = j * (stride - size)  # from an image index to cov's
                        if multi:
                            for ch in range(n_chan):
                                _blend_colour(flat, image + ch * npix, cov, colour[ch], start, stop, shift)
                            _clear(cov, start + shift, stop + shift)
                        else:
                            _blend_ink(flat, image, cov, np.uint16(ink + 0.5), start, stop, shift)
                        row_lo[j] = size
                        row_hi[j] = -1
                j_min = size
                j_max = -1


@numba.njit(**_JIT)
def _stroke_duration(time, has_time, a, b):
    """Milliseconds from a stroke's first point to its last (its number of points without time)."""
    return max(time[b - 1] - time[a], 0.0) if has_time else float(b - a)


@numba.njit(**_JIT)
def _segment(dst, base, stride, spans, ink, colour, col0, col1, row_lo, row_hi, size,
             x0, y0, x1, y1, hw, reach, antialias):
    """Coverage x ink / 255 of one capsule into dst[base + row * stride + column], keeping
    the maximum with what is there (unless colour is None: where the segment wins or ties,
    its colour, col0 -> col1 along it, goes into `colour`). Widens the row spans when asked and
    returns the rows it covers. Pixel (i, j) has its centre at (i + 0.5, j + 0.5).
    (Not inlined: a small function of its own keeps the loops in registers.)"""
    f32 = np.float32
    dx = x1 - x0
    dy = y1 - y0
    len2 = dx * dx + dy * dy
    j_lo = max(int(np.ceil(min(y0, y1) - reach - 0.5)), 0)
    j_hi = min(int(np.floor(max(y0, y1) + reach - 0.5)), size - 1)
    box_lo = min(x0, x1) - reach
    box_hi = max(x0, x1) + reach
    slanted = abs(dy) > 1e-6 * (abs(dx) + 1.0)
    slope = dx / dy if slanted else 0.0
    half = reach * np.sqrt(len2) / abs(dy) if slanted else 0.0
    fdx = f32(dx)
    fdy = f32(dy)
    finv = f32(1.0 / len2 if len2 > 1e-12 else 0.0)
    hw2 = hw * hw
    fx0 = f32(0.5 - x0)
    for j in range(j_lo, j_hi + 1, 2):
        # two rows at a time: independent work for the out-of-order core
        ia0, ia1 = _span(j, y0, x0, box_lo, box_hi, slanted, slope, half, size)
        ib0, ib1 = 0, -1
        if j + 1 <= j_hi:
            ib0, ib1 = _span(j + 1, y0, x0, box_lo, box_hi, slanted, slope, half, size)
        if spans:
            if ia0 <= ia1:
                row_lo[j] = min(row_lo[j], ia0)
                row_hi[j] = max(row_hi[j], ia1)
            if ib0 <= ib1:
                row_lo[j + 1] = min(row_lo[j + 1], ib0)
                row_hi[j + 1] = max(row_hi[j + 1], ib1)
        n = max(ia1 - ia0, ib1 - ib0)
        if n < 0:
            continue
        fya = f32(j + 0.5 - y0)
        fyb = fya + f32(1)
        pa = _U(base + j * stride + ia0)
        pb = _U(base + (j + 1) * stride + ib0) if ib0 <= ib1 else pa
        fxa = f32(ia0) + fx0
        fxb = f32(ib0) + fx0
        lasta = f32(ia1 - ia0)  # lanes past the span are masked out
        lastb = f32(ib1 - ib0)
        for _ in range(n // _LANES + 1):
            if colour is None:  # resolved when numba compiles: two versions of the loop
                for k in range(_LANES):
                    v, u = _lane(fxa + f32(k), fya, fdx, fdy, finv, hw, hw2, antialias, ink,
                                 f32(k) <= lasta)
                    dst[pa + _U(k)] = max(dst[pa + _U(k)], v)
                for k in range(_LANES):
                    v, u = _lane(fxb + f32(k), fyb, fdx, fdy, finv, hw, hw2, antialias, ink,
                                 f32(k) <= lastb)
                    dst[pb + _U(k)] = max(dst[pb + _U(k)], v)
            else:
                for k in range(_LANES):
                    v, u = _lane(fxa + f32(k), fya, fdx, fdy, finv, hw, hw2, antialias, ink,
                                 f32(k) <= lasta)
                    _put_colour(dst, colour, col0, col1, pa + _U(k), v, u)
                for k in range(_LANES):
                    v, u = _lane(fxb + f32(k), fyb, fdx, fdy, finv, hw, hw2, antialias, ink,
                                 f32(k) <= lastb)
                    _put_colour(dst, colour, col0, col1, pb + _U(k), v, u)
            pa += _U(_LANES)
            pb += _U(_LANES)
            fxa += f32(_LANES)
            fxb += f32(_LANES)
            lasta -= f32(_LANES)
            lastb -= f32(_LANES)
    return j_lo, j_hi


@numba.njit(inline="always", **_JIT)
def _span(j, y0, x0, box_lo, box_hi, slanted, slope, half, size):
    """Columns of row j whose centres lie within reach of the segment's line and inside its
    bounding box, clipped to the image; (0, -1) when none."""
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
        return 0, -1
    return i_lo, i_hi


@numba.njit(inline="always", **_JIT)
def _lane(cx, cy, dx, dy, inv_len2, hw, hw2, antialias, ink, live):
    """Ink of the pixel centre (cx, cy) (relative to the segment's start) and its position
    u along the segment. Antialiased ink is the area of the 1 px box [d - 0.5, d + 0.5]
    inside the band [-hw, hw]: exact for a pixel straddling a straight edge, and right for
    lines thinner than a pixel."""
    f32 = np.float32
    u = min(max((cx * dx + cy * dy) * inv_len2, f32(0)), f32(1))
    ex = cx - u * dx
    ey = cy - u * dy
    d2 = ex * ex + ey * ey
    if antialias:
        d = np.sqrt(d2)
        c = min(max(min(d + f32(0.5), hw) - max(d - f32(0.5), -hw), f32(0)), f32(1))
    else:
        c = f32(1) if d2 <= hw2 else f32(0)
    c = c if live else f32(0)
    return np.uint8(np.int32(c * ink + f32(0.5))), u


@numba.njit(inline="always", **_JIT)
def _put_colour(dst, colour, col0, col1, p, v, u):
    old = dst[p]
    # later segments of the stroke win ties; the colour goes with the winner
    win = (v > 0) & (v >= old)
    for ch in range(colour.shape[0]):
        c = np.uint8(np.int32(col0[ch] + (col1[ch] - col0[ch]) * u + np.float32(0.5)))
        colour[ch, p] = c if win else colour[ch, p]
    dst[p] = v if win else old


# Blends over contiguous bytes in uint16 arithmetic, which LLVM vectorises:
# round((v * (255 - c) + ink * c) / 255) = (x + (x >> 8)) >> 8 with x = ... + 128.
# (Every index here is unsigned: numba makes a float of int64 + uint64.)
@numba.njit(inline="always", **_JIT)
def _blend_ink(img, base, cov, ink, start, stop, shift):
    for p in range(_U(base + start), _U(base + stop)):
        q = p - _U(base) + _U(shift)
        c = np.uint16(cov[q])
        x = np.uint16(np.uint16(img[p]) * (np.uint16(255) - c) + ink * c + np.uint16(128))
        img[p] = np.uint8((x + (x >> np.uint16(8))) >> np.uint16(8))
        cov[q] = 0


@numba.njit(inline="always", **_JIT)
def _blend_colour(img, base, cov, ink, start, stop, shift):
    for p in range(_U(base + start), _U(base + stop)):
        q = p - _U(base) + _U(shift)
        c = np.uint16(cov[q])
        x = np.uint16(np.uint16(img[p]) * (np.uint16(255) - c) + np.uint16(ink[q]) * c
                      + np.uint16(128))
        img[p] = np.uint8((x + (x >> np.uint16(8))) >> np.uint16(8))


@numba.njit(inline="always", **_JIT)
def _clear(cov, start, stop):
    for p in range(_U(start), _U(stop)):
        cov[p] = 0
