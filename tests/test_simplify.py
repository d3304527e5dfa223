"""Google's simplification, checked against Google's own simplified drawings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nnlab.errors import DataError
from nnlab.ingest.chunks import read_drawings
from nnlab.ingest.sources import find_sources
from nnlab.strokes.drawing import Drawing
from nnlab.strokes.simplify import simplify_drawing, simplify_packed, simplify_strokes


def _ink(strokes) -> np.ndarray:
    img = np.zeros((256, 256), np.uint8)
    cv2.polylines(img, [np.asarray(s, np.int32).reshape(-1, 1, 2) for s in strokes], False, 255, 1)
    return img > 0


def test_matches_google_on_the_shared_pairs(shared_data):
    simplified = {d.key_id: d for f in find_sources([shared_data / "quickdraw" / "simplified"])
                  for d in read_drawings(f)}
    raw = [d for f in find_sources([shared_data / "quickdraw" / "raw"]) for d in read_drawings(f)]
    assert len(raw) == 7853
    exact = 0
    ious = []
    for r in raw:
        ours = simplify_strokes(r.strokes)
        ref = simplified[r.key_id].strokes
        exact += len(ours) == len(ref) and all(a.shape == b.shape and np.array_equal(a, b)
                                               for a, b in zip(ours, ref))
        a, b = _ink(ours), _ink(ref)
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    exact_rate, mean_iou = exact / len(raw), float(np.mean(ious))
    print(f"exact {exact_rate:.4f}, mean ink IoU {mean_iou:.4f}")
    assert exact_rate >= 0.80
    assert mean_iou >= 0.99


def test_scale_and_alignment():
    strokes = [np.array([[100.0, 50.0, 0], [300.0, 50.0, 10]]), np.array([[100.0, 150.0, 20], [120.0, 150.0, 30]])]
    out = simplify_strokes(strokes)
    pts = np.concatenate(out)
    assert pts.min(axis=0).tolist() == [0, 0]
    assert pts[:, 0].max() == 255  # the larger side spans 0..255
    assert pts[:, 1].max() == round(100 * 255 / 200)  # the other keeps the aspect ratio
    assert out[0].tolist() == [[0, 0], [255, 0]]  # a straight line keeps its two ends


def test_single_points_become_two_points_and_rdp_drops_collinear_points():
    out = simplify_strokes([np.array([[5.0, 5.0]]), np.array([[0.0, 0.0], [50.0, 0.7], [100.0, 0.0]])])
    assert out[0].shape == (2, 2) and (out[0][0] == out[0][1]).all()
    assert len(out[1]) == 2  # 0.7 px off a 100 px line: 1.8 px after scaling, under epsilon 2
    corner = simplify_strokes([np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 100.0]])])
    assert corner[0].tolist() == [[0, 0], [255, 0], [255, 255]]


def test_packed_equals_per_drawing(shared_data):
    drawings = list(read_drawings(shared_data / "quickdraw" / "raw" / "cat.ndjson"))
    lens = np.array([len(s) for d in drawings for s in d.strokes])
    nstr = np.array([len(d.strokes) for d in drawings])
    pts, out_len = simplify_packed(np.concatenate([s for d in drawings for s in d.strokes]), lens, nstr)
    assert pts.dtype == np.uint8
    one = [s for d in drawings for s in simplify_strokes(d.strokes)]
    assert out_len.tolist() == [len(s) for s in one]
    assert np.array_equal(pts, np.concatenate(one))


def test_simplify_drawing_keeps_metadata_and_rejects_bad_input():
    d = Drawing(strokes=[np.array([[0.0, 0.0, 0.0], [10.0, 5.0, 16.0]])], word="line", key_id=3, countrycode="PL")
    s = simplify_drawing(d)
    assert (s.word, s.key_id, s.countrycode) == ("line", 3, "PL") and not s.has_time
    with pytest.raises(DataError):
        simplify_strokes([])
    with pytest.raises(DataError):
        simplify_strokes([np.array([[np.nan, 0.0], [1.0, 1.0]])])
