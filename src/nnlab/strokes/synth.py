"""Procedural doodles in Google's simplified format: the embedded demo data set.

Each class is a small program that draws a shape the way people do in Quick, Draw!: strokes in a
usual but not fixed order and direction, closed outlines that stop short or overshoot, wobbly
lines, shapes made of one stroke by some and of several by others, then a random affine
(rotation, anisotropic scale, shear). The strokes are drawn on a 'screen' of a few hundred
pixels and passed through Google's simplification (`nnlab.strokes.simplify`), so the result looks
like Google's simplified files: integer coordinates 0..255, the larger side spanning 0..255.
Some drawings carry a stray mark that belongs to no class, as real ones do.

A drawing depends only on (seed, class name, index), so asking for more classes or more drawings
per class never changes the drawings already there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnlab.errors import ConfigError
from nnlab.strokes.drawing import Drawing
from nnlab.strokes.simplify import simplify_packed

Stroke = np.ndarray  # (n, 2) float, unit frame: roughly [-1, 1] x [-1, 1], y pointing down
TAU = 2 * np.pi
COUNTRIES = ("US", "GB", "DE", "BR", "IN", "JP", "FR", "CA", "AU", "RU", "PL", "KR")


# ---- building blocks --------------------------------------------------------------------------


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, sweep: float, n: int = 48) -> Stroke:
    t = a0 + np.linspace(0.0, sweep, max(int(n * abs(sweep) / TAU) + 2, 3))
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])


def _closed(rng: np.random.Generator, pts: np.ndarray) -> Stroke:
    """A closed polyline started at a random vertex, in a random direction, ending a little short
    of its start or a little past it (people rarely close shapes exactly)."""
    k = int(rng.integers(len(pts)))
    pts = np.roll(pts, -k, axis=0)
    if rng.random() < 0.5:
        pts = pts[::-1]
    path = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    total = seg.sum()
    end = total * (1.0 + rng.uniform(-0.06, 0.10))
    return _cut(path, end)


def _cut(path: np.ndarray, length: float) -> Stroke:
    """The polyline `path` (cycled when length exceeds it) up to arc length `length`."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    total = seg.sum()
    out = [path[0]]
    walked = 0.0
    k = 0
    while walked < length and total > 0:
        a, b = path[k % (len(path) - 1)], path[k % (len(path) - 1) + 1]
        d = seg[k % (len(path) - 1)]
        if walked + d >= length:
            out.append(a + (b - a) * ((length - walked) / d if d else 0.0))
            break
        out.append(b)
        walked += d
        k += 1
    return np.array(out)


def _closed_curve(rng: np.random.Generator, fn: Callable[[np.ndarray], np.ndarray],
                  n: int = 64) -> Stroke:
    """A closed parametric curve fn(t), t in [0, 2pi), random start/direction, gap or overshoot."""
    t0 = rng.uniform(0, TAU)
    sweep = TAU * (1.0 + rng.uniform(-0.07, 0.12)) * (1 if rng.random() < 0.5 else -1)
    t = t0 + np.linspace(0, sweep, n)
    return fn(t)


def _line(a, b) -> Stroke:
    return np.array([a, b], dtype=float)


def _poly(*pts) -> Stroke:
    return np.array(pts, dtype=float)


def _maybe_split(rng: np.random.Generator, pts: np.ndarray) -> list[Stroke]:
    """A closed polygon (3 or more corners) as one stroke (usually) or as a few strokes split at corners."""
    if rng.random() < 0.6:
        return [_closed(rng, pts)]
    k = int(rng.integers(len(pts)))
    pts = np.roll(pts, -k, axis=0)
    path = np.vstack([pts, pts[:1]])
    cuts = sorted(rng.choice(np.arange(1, len(pts)), size=int(rng.integers(1, min(3, len(pts) - 1) + 1)),
                         replace=False).tolist())
    bounds = [0] + cuts + [len(pts)]
    return [path[a:b + 1] for a, b in zip(bounds[:-1], bounds[1:])]


# ---- the shapes -------------------------------------------------------------------------------


def _circle(rng):
    ry = rng.uniform(0.8, 1.2)
    return [_closed_curve(rng, lambda t: np.column_stack([np.cos(t), ry * np.sin(t)]))]


def _square(rng):
    h = rng.uniform(0.8, 1.2)
    return _maybe_split(rng, np.array([[-1, -h], [1, -h], [1, h], [-1, h]], float))


def _triangle(rng):
    apex = rng.uniform(-0.35, 0.35)
    h = rng.uniform(0.8, 1.2)
    return _maybe_split(rng, np.array([[apex, -h], [1, h], [-1, h]], float))


def _star(rng):
    r_in = rng.uniform(0.35, 0.5)
    a = -np.pi / 2 + rng.normal(0, 0.08)
    outer = [(np.cos(a + k * TAU / 5), np.sin(a + k * TAU / 5)) for k in range(5)]
    if rng.random() < 0.5:  # the one-stroke pentagram
        order = [0, 2, 4, 1, 3, 0]
        pts = np.array([outer[k] for k in order]) * rng.uniform(0.9, 1.1, size=(6, 2))
        pts[-1] = pts[0] + rng.normal(0, 0.05, 2)
        return [pts]
    pts = []
    for k in range(5):
        pts.append(outer[k])
        b = a + (k + 0.5) * TAU / 5
        pts.append((r_in * np.cos(b), r_in * np.sin(b)))
    return [_closed(rng, np.array(pts))]


def _house(rng):
    w = 0.8
    top = rng.uniform(-0.1, 0.3)
    roof = top - rng.uniform(0.6, 1.0)
    body = _maybe_split(rng, np.array([[-w, top], [w, top], [w, 1], [-w, 1]], float))
    over = rng.uniform(0.0, 0.15)
    strokes = body + [_poly((-w - over, top + 0.05), (rng.uniform(-0.15, 0.15), roof), (w + over, top + 0.05))]
    if rng.random() < 0.6:  # a door
        dx = rng.uniform(-0.4, 0.4)
        dw = rng.uniform(0.12, 0.22)
        dt = rng.uniform(0.35, 0.6)
        strokes.append(_poly((dx - dw, 1), (dx - dw, dt), (dx + dw, dt), (dx + dw, 1)))
    if rng.random() < 0.3:  # a window
        c = (rng.choice([-1, 1]) * 0.45, top + 0.3)
        s = 0.12
        strokes.append(_closed(rng, np.array([[c[0] - s, c[1] - s], [c[0] + s, c[1] - s],
                                              [c[0] + s, c[1] + s], [c[0] - s, c[1] + s]])))
    if rng.random() < 0.3:
        strokes = [strokes[-1]] + strokes[:-1]
    return strokes


def _smiley(rng):
    face = _circle(rng)
    ex = rng.uniform(0.25, 0.45)
    ey = rng.uniform(-0.45, -0.2)
    eyes = []
    for sx in (-1, 1):
        if rng.random() < 0.5:
            eyes.append(_poly((sx * ex, ey), (sx * ex + rng.normal(0, 0.02), ey + rng.uniform(0.02, 0.2))))
        else:
            eyes.append(_arc(sx * ex, ey, 0.08, 0.08, rng.uniform(0, TAU), TAU, 12))
    mw = rng.uniform(0.35, 0.6)
    my = rng.uniform(0.15, 0.4)
    mouth = _arc(0, my - 0.2, mw, rng.uniform(0.15, 0.35), rng.uniform(0.1, 0.3), np.pi - rng.uniform(0.2, 0.6))
    parts = [face[0]] + eyes + [mouth]
    if rng.random() < 0.3:
        parts = eyes + [mouth, face[0]]
    return parts


def _zigzag(rng):
    n = int(rng.integers(4, 8))
    amp = rng.uniform(0.3, 0.7)
    x = np.linspace(-1, 1, n + 1)
    y = np.where(np.arange(n + 1) % 2 == 0, -amp, amp) * rng.uniform(0.8, 1.2, n + 1)
    return [np.column_stack([x + rng.normal(0, 0.03, n + 1), y])]


def _spiral(rng):
    turns = rng.uniform(2.0, 3.5)
    t = np.linspace(0, turns * TAU, int(40 * turns))
    r = (t / t[-1]) ** rng.uniform(0.8, 1.2)
    sign = 1 if rng.random() < 0.5 else -1
    pts = np.column_stack([r * np.cos(sign * t), r * np.sin(sign * t)])
    return [pts[::-1] if rng.random() < 0.3 else pts]


def _arrow(rng):
    length = rng.uniform(0.8, 1.0)
    head = rng.uniform(0.3, 0.5)
    spread = rng.uniform(0.2, 0.45)
    shaft = _line((-length, 0), (length, 0))
    tip = (length, 0)
    a, b = (length - head, -spread), (length - head, spread)
    if rng.random() < 0.5:
        heads = [_poly(a, tip, b)]
    else:
        heads = [_line(tip, a), _line(tip, b)]
    return [shaft] + heads if rng.random() < 0.8 else heads + [shaft]


def _heart_xy(t):
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.column_stack([x / 16, y / 16])


def _heart(rng):
    if rng.random() < 0.6:
        return [_closed_curve(rng, _heart_xy, 80)]
    t = np.linspace(0, np.pi, 40)  # two halves from the top dip to the bottom tip
    left = _heart_xy(-t)
    right = _heart_xy(t)
    return [left, right] if rng.random() < 0.5 else [right[::-1], left]


def _cross(rng):
    h = _line((-1, rng.normal(0, 0.1)), (1, rng.normal(0, 0.1)))
    v = _line((rng.normal(0, 0.1), -1), (rng.normal(0, 0.1), 1))
    if rng.random() < 0.5:
        h = h[::-1]
    return [h, v] if rng.random() < 0.5 else [v, h]


def _moon(rng):
    off = rng.uniform(0.45, 0.8)
    a = np.arccos(off / 2)  # the two circles (radius 1, centres 0 and off) cross at angles +-a
    outer = _arc(0, 0, 1, 1, a, TAU - 2 * a, 64)  # the big C, through the left
    inner = _arc(off, 0, 1, 1, np.pi + a, -2 * a, 40)  # back along the inner edge
    pts = np.vstack([outer, inner[1:]])
    return [pts[::-1] if rng.random() < 0.5 else pts]


def _lightning(rng):
    w = rng.uniform(0.35, 0.55)
    pts = _poly((w, -1), (-w, rng.uniform(-0.1, 0.1)), (w, rng.uniform(-0.1, 0.1)), (-w, 1))
    if rng.random() < 0.4:  # an outlined bolt
        d = rng.uniform(0.15, 0.25)
        pts = np.vstack([pts, pts[::-1][1:-1] + [d, -d * 0.5]])
        return [_closed(rng, pts)]
    return [pts]


def _cloud(rng):
    bumps = int(rng.integers(4, 8))
    ry = rng.uniform(0.5, 0.75)
    cuts = np.cumsum(rng.uniform(0.7, 1.3, bumps))
    angles = rng.uniform(0, TAU) + TAU * np.concatenate([[0.0], cuts / cuts[-1]])
    pts = []
    for a, b in zip(angles[:-1], angles[1:]):
        p, q = np.array([np.cos(a), ry * np.sin(a)]), np.array([np.cos(b), ry * np.sin(b)])
        mid = (p + q) / 2
        rad = np.linalg.norm(q - p) / 2
        start = np.arctan2(p[1] - mid[1], p[0] - mid[0])
        # the half circle from p to q that bulges away from the centre
        sweep = np.pi if np.dot([np.cos(start + np.pi / 2), np.sin(start + np.pi / 2)], mid) > 0 else -np.pi
        pts.append(_arc(mid[0], mid[1], rad, rad, start, sweep, 16))
    path = np.vstack(pts)
    return [path if rng.random() < 0.5 else path[::-1]]


def _diamond(rng):
    h = rng.uniform(1.3, 1.8)
    return _maybe_split(rng, np.array([[0, -h], [1, 0], [0, h], [-1, 0]], float))


def _envelope(rng):
    h = rng.uniform(0.55, 0.75)
    body = _maybe_split(rng, np.array([[-1, -h], [1, -h], [1, h], [-1, h]], float))
    flap = _poly((-1, -h), (rng.normal(0, 0.05), rng.uniform(-0.1, 0.25)), (1, -h))
    return body + [flap] if rng.random() < 0.8 else [flap] + body


def _sun(rng):
    r = rng.uniform(0.4, 0.55)
    disc = _closed_curve(rng, lambda t: np.column_stack([r * np.cos(t), r * np.sin(t)]))
    n = int(rng.integers(6, 11))
    a0 = rng.uniform(0, TAU)
    rays = []
    for k in range(n):
        a = a0 + k * TAU / n + rng.normal(0, 0.05)
        r0, r1 = r + rng.uniform(0.08, 0.15), rng.uniform(0.8, 1.0)
        rays.append(_line((r0 * np.cos(a), r0 * np.sin(a)), (r1 * np.cos(a), r1 * np.sin(a))))
    return [disc] + rays


def _fish(rng):
    body_h = rng.uniform(0.35, 0.55)
    top = _arc(0, body_h * 1.6, 1.0, body_h * 2.6, -np.pi * 0.85, np.pi * 0.7, 32)
    top[:, 0] -= 0.2
    bottom = top.copy()
    bottom[:, 1] = -bottom[:, 1]
    nose = top[0]
    tail_x = top[-1, 0]
    t = rng.uniform(0.25, 0.4)
    tail = _poly((tail_x, 0), (0.95, -t), (0.95, t), (tail_x, 0))
    body = np.vstack([top, bottom[::-1]])
    strokes = [body, tail]
    if rng.random() < 0.6:  # an eye
        strokes.append(_arc(nose[0] + 0.3, -0.08, 0.05, 0.05, 0, TAU, 10))
    return strokes


def _tree(rng):
    tw = rng.uniform(0.1, 0.2)
    crown = _cloud(rng)[0] * [0.8, 0.9] + [0, rng.uniform(-0.45, -0.3)]
    under = crown[np.abs(crown[:, 0]) < tw + 0.05]
    base = (under[:, 1].max() if len(under) else crown[:, 1].max()) - 0.02
    trunk = [_line((-tw, base), (-tw, 1)), _line((tw, base), (tw, 1))]
    if rng.random() < 0.5:
        trunk = [_poly((-tw, base), (-tw, 1), (tw, 1), (tw, base))]
    return [crown] + trunk if rng.random() < 0.5 else trunk + [crown]


def _flower(rng):
    n = int(rng.integers(5, 8))
    r = rng.uniform(0.18, 0.28)
    center = _closed_curve(rng, lambda t: np.column_stack([r * np.cos(t), r * np.sin(t) - 0.35]))
    petals = []
    a0 = rng.uniform(0, TAU)
    for k in range(n):
        a = a0 + k * TAU / n
        c = np.array([np.cos(a), np.sin(a)]) * (r + 0.25) + [0, -0.35]
        p = _arc(0, 0, 0.25, 0.13, 0, TAU, 16)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        petals.append(p @ rot.T + c)
    stem = _line((rng.normal(0, 0.05), 0.1), (rng.normal(0, 0.1), 1))
    return [center] + petals + [stem]


SHAPES: dict[str, Callable[[np.random.Generator], list[Stroke]]] = {
    "circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "house": _house,
    "smiley": _smiley, "zigzag": _zigzag, "spiral": _spiral, "arrow": _arrow, "heart": _heart,
    "cross": _cross, "moon": _moon, "lightning": _lightning, "cloud": _cloud, "diamond": _diamond,
    "envelope": _envelope, "sun": _sun, "fish": _fish, "tree": _tree, "flower": _flower,
}
SHAPE_NAMES = list(SHAPES)


# ---- the human touch --------------------------------------------------------------------------


def _densify(stroke: Stroke, step: float = 0.03) -> Stroke:
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] == 0:
        return stroke[:1]
    t = np.linspace(0, cum[-1], max(int(cum[-1] / step) + 2, 2))
    return np.column_stack([np.interp(t, cum, stroke[:, 0]), np.interp(t, cum, stroke[:, 1])])


def _wobble(rng: np.random.Generator, stroke: Stroke, amp: float) -> Stroke:
    """Smooth hand tremor (a few random sinusoids along the stroke) plus a little jitter."""
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    out = stroke.copy()
    for axis in range(2):
        for _ in range(2):
            f = rng.uniform(0.5, 3.0)
            out[:, axis] += amp * rng.uniform(0.3, 1.0) * np.sin(f * s * np.pi + rng.uniform(0, TAU))
    return out + rng.normal(0, amp * 0.15, out.shape)


def _affine(rng: np.random.Generator) -> np.ndarray:
    a = np.deg2rad(np.clip(rng.normal(0, 15), -35, 35))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shear = np.array([[1, rng.uniform(-0.25, 0.25)], [0, 1]])
    scale = np.diag(rng.uniform(0.75, 1.25, 2))
    return rot @ shear @ scale


def _stray(rng: np.random.Generator) -> Stroke:
    """A short extra mark (a tick, a dash, a bit of shading) that belongs to no class."""
    c = rng.uniform(-0.9, 0.9, 2)
    n = int(rng.integers(2, 5))
    return c + np.cumsum(rng.normal(0, 0.18, (n, 2)), axis=0)


def synth_strokes(shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """One human-looking drawing of `shape` as raw float strokes on a ~400 px 'screen'."""
    strokes = SHAPES[shape](rng)
    if len(strokes) > 1 and rng.random() < 0.15:  # sometimes an unusual stroke order
        strokes = [strokes[k] for k in rng.permutation(len(strokes))]
    strokes = [s[::-1] if rng.random() < 0.2 else s for s in strokes]
    if rng.random() < 0.15:
        strokes.insert(int(rng.integers(len(strokes) + 1)), _stray(rng))
    m = _affine(rng)
    amp = rng.uniform(0.005, 0.04)
    out = []
    for s in strokes:
        s = _wobble(rng, _densify(np.asarray(s, float)), amp)
        out.append(s @ m.T * 180.0 + 250.0)
    return out


def _key_id(seed: int, shape_index: int, i: int) -> int:
    """Unique per (seed mod 2**16, shape, index); a recognisable 2**52 prefix marks synthetic ids."""
    return (1 << 52) | ((seed & 0xFFFF) << 36) | (shape_index << 28) | i


def synth_drawings(classes: int | Sequence[str], per_class: int, seed: int) -> list[Drawing]:
    """`per_class` simplified drawings of each class (an int K takes the first K of SHAPE_NAMES),
    grouped by class, deterministic for a seed. Each drawing has a key_id, a countrycode and
    recognized=True."""
    if isinstance(classes, (int, np.integer)):
        if not 1 <= classes <= len(SHAPE_NAMES):
            raise ConfigError(f"synth: classes must be 1..{len(SHAPE_NAMES)}, got {classes}")
        names = SHAPE_NAMES[:int(classes)]
    else:
        names = list(classes)
        unknown = [c for c in names if c not in SHAPES]
        if unknown:
            raise ConfigError(f"synth: no shape {unknown}; known: {', '.join(SHAPE_NAMES)}")
    if per_class < 1 or per_class >= 1 << 28:
        raise ConfigError(f"synth: per_class must be 1..{(1 << 28) - 1}, got {per_class}")
    if seed < 0:
        raise ConfigError(f"synth: seed must be >= 0, got {seed}")
    out: list[Drawing] = []
    for name in names:
        k = SHAPE_NAMES.index(name)
        raw = []
        meta = []
        for i in range(per_class):
            rng = np.random.default_rng([seed, k, i])
            raw.append(synth_strokes(name, rng))
            meta.append((_key_id(seed, k, i), COUNTRIES[int(rng.integers(len(COUNTRIES)))]))
        lens = np.array([len(s) for strokes in raw for s in strokes], np.int64)
        nstr = np.array([len(strokes) for strokes in raw], np.int64)
        pts, out_len = simplify_packed(np.concatenate([s for strokes in raw for s in strokes]), lens, nstr)
        pts = pts.astype(np.int32)
        bounds = np.concatenate([[0], np.cumsum(out_len)])
        s = 0
        for strokes, (key, cc) in zip(raw, meta):
            mine = [pts[bounds[j]:bounds[j + 1]] for j in range(s, s + len(strokes))]
            s += len(strokes)
            out.append(Drawing(strokes=mine, word=name, key_id=key, countrycode=cc, recognized=True))
    return out
