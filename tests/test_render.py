"""nnlab.strokes.render and nnlab.strokes.augment: pixel-exact checks on hand-made drawings, the encodings,
the agreement with the Kaggle reference (cv2.line at 256 px), and the augmentation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from nnlab.errors import ConfigError
from nnlab.strokes.augment import StrokeAugment
from nnlab.strokes.drawing import Drawing, StrokeBatch
from nnlab.strokes.render import ENCODINGS, INK_LOW, default_line_width, render
from nnlab.strokes.simplify import frame_batch


def seg_distance(size: int, a, b, padding: float = 0.0) -> np.ndarray:
    """Distance from every pixel centre to segment a-b (0..255 coordinates), brute force."""
    scale = size * (1 - 2 * padding) / 256
    p = (np.asarray(a, float) + 0.5) * scale + padding * size
    q = (np.asarray(b, float) + 0.5) * scale + padding * size
    jj, ii = np.mgrid[0:size, 0:size] + 0.5
    c = np.stack([ii, jj], -1)
    d = q - p
    t = np.clip(((c - p) @ d) / max(d @ d, 1e-12), 0, 1)
    return np.linalg.norm(c - p - t[..., None] * d, axis=-1)


def test_horizontal_line_lights_exactly_its_rows_and_columns():
    line = [np.array([[10, 100], [50, 100]])]
    img = render([line], size=256, line_width=1, antialias=False)[0, 0]
    rows, cols = np.nonzero(img)
    assert set(rows) == {100}
    assert cols.min() == 10 and cols.max() == 50 and len(cols) == 41
    assert set(img[img > 0]) == {255}
    # 64 px, 4 px wide: y = 128 maps to 32.125, so centres 30.5 .. 33.5 lie within 2 px;
    # the round caps reach 2 px beyond x = 8.125 and 55.875 on the rows nearest the line
    img = render([[np.array([[32, 128], [223, 128]])]], size=64, line_width=4, antialias=False)[0, 0]
    rows, cols = np.nonzero(img)
    assert sorted(set(rows)) == [30, 31, 32, 33]
    assert (cols.min(), cols.max()) == (6, 57)
    for r in (31, 32):
        assert np.flatnonzero(img[r]).tolist() == list(range(6, 58))
    for r in (30, 33):
        assert np.flatnonzero(img[r]).tolist() == list(range(7, 57))


def test_antialiased_line_has_full_core_and_half_covered_edges():
    img = render([[np.array([[10, 100], [50, 100]])]], size=256, line_width=2)[0, 0]
    # centre row fully inked, the rows 1 px away are half covered (their box spans 0.5..1.5)
    assert img[100, 20:40].tolist() == [255] * 20
    assert np.all(np.abs(img[99, 20:40].astype(int) - 128) <= 1)
    assert np.array_equal(img[99], img[101])
    assert not img[:98].any() and not img[103:].any()


@pytest.mark.parametrize("size,width,padding", [(28, 2.0, 0.0), (64, 1.5, 0.1), (96, 5.0, 0.0)])
def test_hard_edges_match_brute_force_capsules(size, width, padding):
    stroke = np.array([[20, 30], [200, 90], [120, 240], [121, 241], [30, 140]])
    img = render([[stroke]], size=size, line_width=width, antialias=False, padding=padding)[0, 0]
    dist = np.min([seg_distance(size, stroke[i], stroke[i + 1], padding)
                   for i in range(len(stroke) - 1)], axis=0)
    expected = dist <= max(width / 2, 0.5)
    # centres exactly on the edge may go either way with rounding; nothing else may differ
    edge = np.abs(dist - max(width / 2, 0.5)) < 1e-4
    assert np.array_equal((img > 0)[~edge], expected[~edge])


@pytest.mark.parametrize("antialias", [False, True])
def test_strokes_past_the_border_are_clipped_without_leaking(antialias):
    # lines that leave the canvas on every side, in a batch: the 8-pixel groups that reach
    # past a row's end must not ink the next row, the next channel or the next drawing
    size = 40
    out_of_canvas = np.array([[-60, 100], [300, 250], [250, 400], [120, -50], [400, 30]])
    drawings = [[out_of_canvas], [np.array([[100, 100], [110, 120]])], [out_of_canvas[::-1]]]
    for encoding in ENCODINGS:
        img = render(drawings, size=size, encoding=encoding, antialias=antialias)
        dist = np.min([seg_distance(size, out_of_canvas[i], out_of_canvas[i + 1]) for i in range(4)], axis=0)
        hw = max(6 * size / 256 / 2, 0.5) if not antialias else 6 * size / 256 / 2
        reach = hw if not antialias else hw + 0.5
        for k in (0, 2):
            ink = img[k].max(axis=0) > 0
            assert not (ink & (dist > reach + 1e-4)).any()
            assert ink[dist < reach - 0.2].all()
        second = img[1].max(axis=0) > 0
        assert second.sum() < 30 and not second[:, :10].any() and not second[:, 25:].any()


def test_antialiased_coverage_matches_the_box_filter():
    size, hw = 48, 1.3
    stroke = np.array([[15, 15], [240, 60], [60, 230]])
    img = render([[stroke]], size=size, line_width=2 * hw)[0, 0].astype(int)
    dist = np.min([seg_distance(size, stroke[i], stroke[i + 1]) for i in range(2)], axis=0)
    cov = np.clip(np.minimum(dist + 0.5, hw) - np.maximum(dist - 0.5, -hw), 0, 1)
    assert np.abs(img - np.round(cov * 255)).max() <= 2


def test_dots_thin_lines_and_empty_drawings():
    out = render([[np.array([[128, 128]])], [], [np.array([[0, 10], [255, 10]])]], size=32)
    assert out.shape == (3, 1, 32, 32) and out.dtype == np.uint8
    assert out[0, 0, 16, 16] > 0 and out[0, 0].sum() > 0  # a one-point stroke is a dot
    assert not out[1].any()
    # 6 * 32 / 256 = 0.75 px wide: faint but unbroken along the whole row
    row = out[2, 0].max(axis=0)
    assert (row > 0).all() and row.max() < 255


def test_padding_shrinks_the_canvas_into_the_middle():
    box = [np.array([[0, 0], [255, 0], [255, 255], [0, 255], [0, 0]])]
    img = render([box], size=100, padding=0.25, antialias=False, line_width=1)[0, 0]
    rows, cols = np.nonzero(img)
    assert rows.min() == 25 and rows.max() == 74 and cols.min() == 25 and cols.max() == 74


def test_time_decay_colours_each_stroke_and_paints_later_strokes_on_top():
    strokes = [np.array([[10, 10 + 20 * t], [240, 10 + 20 * t]]) for t in range(12)]
    img = render([strokes], size=256, encoding="time-decay", line_width=3)[0, 0]
    for t in range(12):
        assert img[10 + 20 * t, 100] == 255 - min(t, 10) * 13
    # two crossing strokes: the crossing takes the second stroke's colour, as cv2.line does
    cross = [np.array([[0, 128], [255, 128]]), np.array([[128, 0], [128, 255]])]
    img = render([cross], size=256, encoding="time-decay", line_width=5)[0, 0]
    assert img[128, 128] == 242 and img[128, 20] == 255 and img[20, 128] == 242
    # binary draws the same drawing in one colour
    assert set(np.unique(render([cross], size=256, line_width=5, antialias=False))) == {0, 255}


def test_order_velocity_time_channels():
    lw = 4
    # stroke 0: left half slow (1 px/ms), right half fast (10 px/ms); stroke 1 later on
    slow = [[x, 50, x] for x in range(0, 101, 20)]
    fast = [[x, 50, 100 + (x - 100) / 10] for x in range(120, 201, 20)]
    d = Drawing(strokes=[np.array(slow + fast, float), np.array([[0, 200, 500], [200, 200, 900]], float)])
    img = render([d], size=256, encoding="order-velocity-time", line_width=lw)[0].astype(int)
    assert img.shape == (3, 256, 256)
    order, speed, elapsed = img
    # order: first stroke 255, last stroke INK_LOW
    assert order[50, 50] == 255 and order[200, 100] == round(INK_LOW)
    # speed: the fast segment is brighter than the slow one (saturated at 2x the mean)
    assert speed[50, 190] > speed[50, 30] + 50 and speed[50, 190] == 255
    # time grows along each stroke and from stroke to stroke: 50 ms of 900 at x = 50
    assert elapsed[50, 50] == round(INK_LOW + (255 - INK_LOW) * 50 / 900)
    assert elapsed[50, 20] < elapsed[50, 50] < elapsed[50, 150] < elapsed[200, 20] < elapsed[200, 180]
    # every channel shows all the ink (hard edges: no faint fringe to round away)
    hard = render([d], size=256, encoding="order-velocity-time", line_width=lw, antialias=False)[0]
    ink = hard.max(axis=0) > 0
    assert ink.sum() > 1000 and all(((c > 0) == ink).all() for c in hard)
    # without time, time falls back to point order and speed to the step length
    flat = [np.array([[0, 50], [100, 50], [110, 50]]), np.array([[0, 200], [200, 200]])]
    img2 = render([flat], size=256, encoding="order-velocity-time", line_width=lw)[0].astype(int)
    assert img2[2, 50, 50] == round(INK_LOW + (255 - INK_LOW) * 0.5 / 4)  # half way from point 0 to 1
    assert img2[1, 50, 50] > img2[1, 50, 105]  # a 100 px step is "faster" than a 10 px one


def test_order_stroke_time_channels():
    lw = 4
    # three strokes: 400 ms, then a 100 ms pause and a 100 ms stroke, then a 300 ms pause and 200 ms
    d = Drawing(strokes=[np.array([[20, 40, 0], [220, 40, 400]], float),
                         np.array([[20, 120, 500], [220, 120, 600]], float),
                         np.array([[20, 200, 900], [220, 200, 1100]], float)])
    img = render([d], size=256, encoding="order-stroke-time", line_width=lw)[0].astype(int)
    order, draw_time, pause = img
    low = round(INK_LOW)
    assert [order[y, 120] for y in (40, 120, 200)] == [255, round((255 + INK_LOW) / 2), low]
    assert [draw_time[y, 120] for y in (40, 120, 200)] == [255, round(INK_LOW + (255 - INK_LOW) * 100 / 400),
                                                           round(INK_LOW + (255 - INK_LOW) * 200 / 400)]
    assert [pause[y, 120] for y in (40, 120, 200)] == [low, round(INK_LOW + (255 - INK_LOW) * 100 / 300), 255]
    assert draw_time[40, 30] == draw_time[40, 210]  # constant along a stroke
    # without time: draw time from the number of points, no pauses
    flat = [np.array([[20, 40], [120, 40], [220, 40]]), np.array([[20, 120], [220, 120]])]
    img2 = render([flat], size=256, encoding="order-stroke-time", line_width=lw)[0].astype(int)
    assert img2[1, 40, 120] == 255 and img2[1, 120, 120] == round(INK_LOW + (255 - INK_LOW) * 2 / 3)
    assert img2[2, 40, 120] == low and img2[2, 120, 120] == low


def test_render_takes_batches_drawings_and_stroke_lists_alike():
    drawings = [Drawing(strokes=[np.array([[10, 10], [200, 180]])], word="a"),
                Drawing(strokes=[np.array([[50, 200], [60, 20], [250, 90]])], word="b")]
    a = render(drawings, size=40, encoding="time-decay")
    b = render([d.strokes for d in drawings], size=40, encoding="time-decay")
    packed = StrokeBatch.from_drawings(drawings)
    packed.points = packed.points.astype(np.uint8)  # the store's simplified dtype
    c = render(packed, size=40, encoding="time-decay")
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert a.shape == (2, ENCODINGS["time-decay"], 40, 40)


@pytest.mark.parametrize("kwargs", [dict(encoding="rgb"), dict(size=0), dict(padding=0.5),
                                    dict(line_width=0)])
def test_render_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        render([[np.array([[0, 0], [1, 1]])]], **kwargs)


def test_frame_batch_puts_raw_drawings_in_googles_frame_keeping_time():
    raw = StrokeBatch.from_drawings([[np.array([[500.0, 300.0, 0], [900.0, 500.0, 40]])],
                                     [np.array([[-5.0, 10.0, 0], [-5.0, 30.0, 5]])]])
    framed = frame_batch(raw)
    assert np.allclose(framed.points[:2], [[0, 0], [255, 127.5]])
    assert np.allclose(framed.points[2:], [[0, 0], [0, 255]])
    assert np.array_equal(framed.time, raw.time)


def load_simplified(folder, per_file=None):
    drawings = []
    for path in sorted(folder.glob("*.ndjson")):
        with open(path) as f:
            for k, line in enumerate(f):
                if per_file is not None and k >= per_file:
                    break
                drawings.append([np.array(s[:2], dtype=np.int32).T for s in json.loads(line)["drawing"]])
    return drawings


def reference_ink(strokes) -> np.ndarray:
    """The Kaggle reference's ink at 256 px: cv2.line, thickness 6, per segment."""
    img = np.zeros((256, 256), np.uint8)
    for s in strokes:
        for i in range(len(s) - 1):
            cv2.line(img, (int(s[i, 0]), int(s[i, 1])), (int(s[i + 1, 0]), int(s[i + 1, 1])), 255, 6)
    return img > 0


def test_binary_ink_overlaps_the_reference_at_256(shared_data):
    drawings = load_simplified(shared_data / "quickdraw" / "simplified")
    assert len(drawings) > 8000
    ious = []
    for k in range(0, len(drawings), 1000):  # in chunks: 8,600 images at 256 px are 0.5 GB
        chunk = drawings[k:k + 1000]
        o = render(chunk, size=256, encoding="binary", line_width=6)[:, 0] > 0
        ref = np.stack([reference_ink(d) for d in chunk])
        ious.append((o & ref).sum((1, 2)) / np.maximum((o | ref).sum((1, 2)), 1))
    iou = np.concatenate(ious)
    assert iou.mean() >= 0.9, iou.mean()
    assert np.percentile(iou, 1) >= 0.8


def test_default_line_width_follows_the_reference():
    assert default_line_width(256) == 6 and default_line_width(64) == 1.5


# ----- augmentation


def _batch(n=40, seed=0) -> StrokeBatch:
    rng = np.random.default_rng(seed)
    drawings = [[rng.integers(0, 256, (rng.integers(1, 8), 2)) for _ in range(rng.integers(1, 6))]
                for _ in range(n)]
    drawings[3] = []  # an empty drawing survives too
    return StrokeBatch.from_drawings(drawings)


def test_augment_is_reproducible_and_leaves_the_input_alone():
    batch = _batch()
    before = batch.points.copy()
    aug = StrokeAugment(stroke_dropout=0.3, flip=0.5)
    a = aug(batch, np.random.default_rng(7))
    b = aug(batch, np.random.default_rng(7))
    c = aug(batch, np.random.default_rng(8))
    assert np.array_equal(batch.points, before)
    for x, y in ((a.points, b.points), (a.stroke_ptr, b.stroke_ptr), (a.drawing_ptr, b.drawing_ptr)):
        assert np.array_equal(x, y)
    assert not (len(a.points) == len(c.points) and np.allclose(a.points, c.points))
    assert np.array_equal(render(a, size=32), render(b, size=32))


def test_augment_keeps_every_drawing_and_at_least_one_stroke():
    batch = _batch(200)
    out = StrokeAugment(stroke_dropout=0.9)(batch, np.random.default_rng(0))
    assert len(out) == len(batch)
    before = np.diff(batch.drawing_ptr)
    after = np.diff(out.drawing_ptr)
    assert np.all((after >= 1) | (before == 0)) and np.all(after <= before)
    assert after.sum() < before.sum() * 0.5  # dropout really drops
    assert out.stroke_ptr[-1] == len(out.points)
    # surviving strokes are whole strokes of the same drawing
    lengths_before = {(d, n) for d in range(len(batch))
                      for n in np.diff(batch.stroke_ptr[batch.drawing_ptr[d]:batch.drawing_ptr[d + 1] + 1])}
    for d in range(len(out)):
        for n in np.diff(out.stroke_ptr[out.drawing_ptr[d]:out.drawing_ptr[d + 1] + 1]):
            assert (d, n) in lengths_before


def test_augment_parts_do_what_they_say():
    batch = StrokeBatch.from_drawings([[np.array([[100, 100], [200, 100]])]])
    rng = np.random.default_rng(0)
    ident = StrokeAugment(rotation=0, scale=(1, 1), shear=0, translate=0, stroke_dropout=0, jitter=0)
    assert np.allclose(ident(batch, rng).points, batch.points)
    turn = StrokeAugment(rotation=90, scale=(1, 1), shear=0, translate=0, stroke_dropout=0, jitter=0)
    p = turn(batch, rng).points
    assert np.isclose(np.linalg.norm(p[1] - p[0]), 100)  # a rotation keeps lengths
    assert np.allclose(p.mean(0), [150, 100])  # about the drawing's centre
    flip = StrokeAugment(rotation=0, scale=(1, 1), shear=0, translate=0, stroke_dropout=0, jitter=0, flip=1.0)
    assert np.allclose(flip(batch, rng).points, [[200, 100], [100, 100]])
    with pytest.raises(ConfigError):
        StrokeAugment(scale=(1.2, 0.8))
    with pytest.raises(ConfigError):
        StrokeAugment(stroke_dropout=1.0)


def test_augment_keeps_time_with_its_points():
    d = Drawing(strokes=[np.array([[0, 0, 0], [10, 10, 5]], float), np.array([[50, 50, 9], [60, 60, 12]], float)])
    batch = StrokeBatch.from_drawings([d] * 30)
    out = StrokeAugment(stroke_dropout=0.5)(batch, np.random.default_rng(1))
    assert out.time is not None and len(out.time) == len(out.points)
    starts = out.time[out.stroke_ptr[:-1]]
    assert set(starts.tolist()) <= {0.0, 9.0}


def test_stroke_dropout_rescues_only_drawings_that_lost_every_stroke():
    from nnlab.strokes.augment import _drop_strokes

    # drawing 0: two strokes, the second kept; drawing 1: no strokes at all (last in the batch)
    points = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], np.float32)
    batch = StrokeBatch(points, np.array([0, 2, 4]), np.array([0, 2, 2]))
    out = _drop_strokes(batch, keep=np.array([False, True]), rescue=np.array([0.0, 0.0]))
    assert out.drawing_ptr.tolist() == [0, 1, 1]  # no rescue stroke on top of the kept one
    assert out.points.tolist() == [[2, 2], [3, 3]]


def test_model_input_scales_like_torch_without_torchs_threads(shared_data):
    """to_model_input divides by 255 in NumPy (a torch op on a served batch of 16 woke torch's thread pool,
    which then spun beside onnxruntime): bit for bit what torch's division gives, every encoding."""
    import torch

    from nnlab.datasets.strokes import to_model_input

    drawings = load_simplified(shared_data / "quickdraw" / "simplified", per_file=2)
    for encoding in ENCODINGS:
        x = to_model_input(drawings, size=48, encoding=encoding)
        expected = torch.from_numpy(render(drawings, size=48, encoding=encoding)).float().div_(255.0)
        assert x.dtype == torch.float32 and x.shape == expected.shape
        assert torch.equal(x, expected)
        assert 0 < float(x.max()) <= 1.0
