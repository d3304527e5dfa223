"""Smaller hostile inputs of the second hardening round, each one clear error (or a sensible answer)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import nnlab
from nnlab.config import validate
from nnlab.ingest.image_files import ImageTooLargeError, read_image


def test_nan_or_infinite_normalisation_is_refused():
    for key in ("mean", "std"):
        for value in (float("nan"), float("inf")):
            with pytest.raises(nnlab.ConfigError, match=f"data.{key}"):
                validate({"data": {"kind": "digits", key: value}})


def test_lr_find_and_study_refuse_meaningless_parameters(tmp_path):
    cfg = {"name": "t", "data": {"kind": "digits", "image_size": 8}, "model": {"name": "mlp", "hidden": [8]}}
    with pytest.raises(nnlab.ConfigError, match="beta"):
        nnlab.lr_find(cfg, out=tmp_path / "lr", beta=1)
    with pytest.raises(nnlab.ConfigError, match="diverge"):
        nnlab.lr_find(cfg, out=tmp_path / "lr", diverge=0.5)
    for workers in (0, -1, 1.5):
        with pytest.raises(nnlab.NnlabError, match="workers"):
            nnlab.study(cfg, grid={"a": {}}, seeds=1, out=tmp_path / "s", workers=workers)
    assert not (tmp_path / "s").exists() and not (tmp_path / "lr").exists()


def test_image_errors_name_the_upload_not_a_python_object():
    with pytest.raises(nnlab.DataError) as exc:
        read_image(io.BytesIO(b"not an image at all"), name="upload")
    assert "BytesIO" not in str(exc.value) and "0x" not in str(exc.value) and "upload" in str(exc.value)


def test_an_image_over_pillows_own_limit_is_too_large_not_corrupt(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses images over 2x this outright
    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ImageTooLargeError, match="upload"):
        read_image(io.BytesIO(buf.getvalue()), name="upload")


def test_faiss_pq_on_a_small_gallery_searches_exactly_and_says_so():
    pytest.importorskip("faiss")
    from nnlab.inference.faces.search import PQ_MIN_VECTORS, make_index

    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index = make_index(v, "faiss-pq")
    assert str(PQ_MIN_VECTORS) in index.note
    scores, rows = index.search(v[:5], 3)
    assert (rows[:, 0] == np.arange(5)).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_predict_on_a_damaged_or_wrong_npz_is_one_line(tmp_path):
    from image_models import digits_run

    from nnlab.inference.predict import read_image_inputs

    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "flat.npz", images=np.zeros(10, np.uint8))
    for name, message in (("bad.npz", "not a readable .npz"), ("flat.npz", r"expected \(N, H, W")):
        with pytest.raises(nnlab.DataError, match=message):
            read_image_inputs(tmp_path / name)
    with pytest.raises(nnlab.DataError, match="not a readable"):
        nnlab.load_run(digits_run()).predict(tmp_path / "bad.npz")


def test_class_folders_whose_names_cannot_be_a_line_of_classes_txt_are_refused(tmp_path):
    from nnlab.ingest.images import load_folder_source

    img = np.zeros((8, 8), np.uint8)
    for bad in (" ", "b\nc", " cat"):
        root = tmp_path / f"set{len(bad)}{bad.strip()[:1]}"
        for name in ("a", bad, "z"):
            (root / name).mkdir(parents=True)
            Image.fromarray(img).save(root / name / "0.png")
        with pytest.raises(nnlab.DataError, match="rename the folder"):
            load_folder_source(root)
