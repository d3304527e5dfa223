"""The bad-input corpus of `test_bad_inputs.py`, for what ships a model: damaged or mismatched galleries
(gallery.json, embeddings.npz) under `identify` and `gallery add`, damaged exports (model.onnx,
classes.txt, preprocessing.json) under `embed` and the Python loaders, and the Python API
(`TrainedRun.predict` with arrays that are no images, `nnlab.fit` with parameters that mean nothing).
Each is a clear answer: a result, or one `error: ...` line (exit 2) / one NnlabError, never a traceback,
and a failed command changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from image_models import digits_export, digits_run, faces_export, faces_run, split_folders

import nnlab
from nnlab.inference.faces.gallery import build_gallery
from nnlab.inference.models.image import load_image_model


def one_line_or_ok(result) -> None:
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def gallery_corpus(good: Path) -> dict[str, tuple[str, bytes | None]]:
    """name -> (file of the gallery to replace, its new bytes; None removes it)."""
    meta = json.loads((good / "gallery.json").read_text())
    with np.load(good / "embeddings.npz") as z:
        emb, labels, means = z["embeddings"], z["labels"], z["means"]
    edit = lambda **kw: json.dumps(meta | kw).encode()
    raw = (good / "embeddings.npz").read_bytes()
    return {
        "meta-empty": ("gallery.json", b""),
        "meta-not-json": ("gallery.json", b"{not json"),
        "meta-a-list": ("gallery.json", b"[1, 2]"),
        "meta-not-utf8": ("gallery.json", b"\xff\xfe{\x00"),
        "meta-deep": ("gallery.json", b"[" * 100_000 + b"]" * 100_000),
        "meta-missing": ("gallery.json", None),
        "meta-other-format": ("gallery.json", edit(format="something-else")),
        "meta-no-fingerprint": ("gallery.json", json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}).encode()),
        "meta-identities-a-number": ("gallery.json", edit(identities=5)),
        "meta-identities-of-numbers": ("gallery.json", edit(identities=list(range(len(meta["identities"]))))),
        "meta-paths-a-string": ("gallery.json", edit(paths="x")),
        "meta-fingerprint-a-list": ("gallery.json", edit(fingerprint=[1])),
        "meta-one-identity-less": ("gallery.json", edit(identities=meta["identities"][:-1])),
        "meta-one-path-less": ("gallery.json", edit(paths=meta["paths"][:-1])),
        "npz-empty": ("embeddings.npz", b""),
        "npz-text": ("embeddings.npz", b"not a zip file at all"),
        "npz-truncated": ("embeddings.npz", raw[: len(raw) // 2]),
        "npz-missing": ("embeddings.npz", None),
        "npz-no-labels": ("embeddings.npz", _npz(embeddings=emb, means=means)),
        "npz-pickled": ("embeddings.npz", _npz(embeddings=np.array([object()] * len(emb)), labels=labels)),
        "npz-1d-embeddings": ("embeddings.npz", _npz(embeddings=emb[:, 0], labels=labels, means=means)),
        "npz-other-dimension": ("embeddings.npz", _npz(embeddings=emb[:, :3], labels=labels, means=means[:, :3])),
        "npz-nan": ("embeddings.npz", _npz(embeddings=np.full_like(emb, np.nan), labels=labels, means=means)),
        "npz-negative-label": ("embeddings.npz", _npz(embeddings=emb, labels=labels - 1, means=means)),
        "npz-float-labels": ("embeddings.npz", _npz(embeddings=emb, labels=labels + 0.5, means=means)),
        "npz-string-embeddings": ("embeddings.npz", _npz(embeddings=np.full(emb.shape, "x"), labels=labels)),
        "npz-one-row-less": ("embeddings.npz", _npz(embeddings=emb[:-1], labels=labels[:-1], means=means)),
    }


@pytest.fixture(scope="module")
def good_gallery(tmp_path_factory, shared_data) -> Path:
    folders = split_folders(faces_run())
    return build_gallery(load_image_model(faces_export()), folders["enrol"]).save(tmp_path_factory.mktemp("g") / "g")


GALLERY_CASES = sorted(gallery_corpus.__doc__ and [
    "meta-empty", "meta-not-json", "meta-a-list", "meta-not-utf8", "meta-deep", "meta-missing", "meta-other-format",
    "meta-no-fingerprint", "meta-identities-a-number", "meta-identities-of-numbers", "meta-paths-a-string",
    "meta-fingerprint-a-list", "meta-one-identity-less", "meta-one-path-less", "npz-empty", "npz-text",
    "npz-truncated", "npz-missing", "npz-no-labels", "npz-pickled", "npz-1d-embeddings", "npz-other-dimension",
    "npz-nan", "npz-negative-label", "npz-float-labels", "npz-string-embeddings", "npz-one-row-less"])


@pytest.mark.parametrize("name", GALLERY_CASES)
def test_a_damaged_gallery_is_one_line_and_add_changes_nothing(good_gallery, name, cli, tmp_path):
    file, data = gallery_corpus(good_gallery)[name]
    gallery = shutil.copytree(good_gallery, tmp_path / "g")
    if data is None:
        (gallery / file).unlink()
    else:
        (gallery / file).write_bytes(data)
    before = {p.name: p.read_bytes() for p in gallery.iterdir()}
    folders = split_folders(faces_run())
    person = sorted(folders["probes"].iterdir())[0]
    probe = sorted(person.iterdir())[0]
    result = cli("identify", faces_export(), gallery, probe, "--threshold", "0.5", "--out", tmp_path / "m.csv", ok=False)
    one_line_or_ok(result)
    assert result.returncode == 2, result.stdout  # every case is refused
    newcomer = tmp_path / "new" / "newbie"
    newcomer.mkdir(parents=True)
    (newcomer / probe.name).symlink_to(probe.resolve())
    one_line_or_ok(cli("gallery", "add", faces_export(), gallery, tmp_path / "new", ok=False))
    if result.returncode == 2:
        assert {p.name: p.read_bytes() for p in gallery.iterdir()} == before  # a refused gallery is left as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_paths_that_are_the_wrong_kind_are_one_line(good_gallery, cli, tmp_path):
    probe = sorted(sorted(split_folders(faces_run())["probes"].iterdir())[0].iterdir())[0]
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    enrol = split_folders(faces_run())["enrol"]
    for args in (["gallery", "build", faces_export(), enrol, "--out", tmp_path / "file.txt"],
                 ["identify", faces_export(), good_gallery, probe, "--threshold", "0.5", "--out", tmp_path / "folder"],
                 ["embed", faces_export(), probe, "--out", tmp_path / "folder"],
                 ["export", faces_run(), "--out", tmp_path / "file.txt"]):
        result = cli(*args, ok=False)
        assert result.returncode == 2, result.stderr
        one_line_or_ok(result)
    assert (tmp_path / "file.txt").read_text() == "mine" and list((tmp_path / "folder").iterdir()) == []


# ------------------------------------------------------------------ exports

def export_corpus(good: Path) -> dict[str, tuple[str, bytes | None]]:
    """name -> (file of the export to replace, its new bytes; None removes it)."""
    info = json.loads((good / "preprocessing.json").read_text())
    onnx = (good / "model.onnx").read_bytes()
    edit = lambda **kw: json.dumps(info | kw).encode()
    return {
        "onnx-empty": ("model.onnx", b""),
        "onnx-garbage": ("model.onnx", b"\x08\x07garbage" * 100),
        "onnx-truncated": ("model.onnx", onnx[: len(onnx) // 2]),
        "onnx-missing": ("model.onnx", None),
        "classes-empty": ("classes.txt", b""),
        "classes-one-less": ("classes.txt", "".join(f"{c}\n" for c in (good / "classes.txt").read_text().split()[:-1]).encode()),
        "classes-not-utf8": ("classes.txt", b"\xff\xfe\x00a\n"),
        "classes-missing": ("classes.txt", None),
        "meta-missing": ("preprocessing.json", None),
        "meta-not-json": ("preprocessing.json", b"{nope"),
        "meta-a-list": ("preprocessing.json", b"[]"),
        "meta-other-format": ("preprocessing.json", edit(format="tflite")),
        "meta-no-input": ("preprocessing.json", json.dumps({k: v for k, v in info.items() if k != "input"}).encode()),
        "meta-no-image": ("preprocessing.json", json.dumps({k: v for k, v in info.items() if k != "image"}).encode()),
        "meta-task-unknown": ("preprocessing.json", edit(task="regression")),
        "meta-size-a-string": ("preprocessing.json", edit(image=info["image"] | {"image_size": "big"})),
        "meta-size-other": ("preprocessing.json", edit(image=info["image"] | {"image_size": 7})),
        "meta-channels-zero": ("preprocessing.json", edit(image=info["image"] | {"channels": 0})),
        "meta-mean-a-string": ("preprocessing.json", edit(normalisation=info["normalisation"] | {"mean": "x"})),
        "meta-deep": ("preprocessing.json", b"[" * 100_000 + b"]" * 100_000),
    }


EXPORT_CASES = sorted(export_corpus.__doc__ and [
    "onnx-empty", "onnx-garbage", "onnx-truncated", "onnx-missing", "classes-empty", "classes-one-less",
    "classes-not-utf8", "classes-missing", "meta-missing", "meta-not-json", "meta-a-list", "meta-other-format",
    "meta-no-input", "meta-no-image", "meta-task-unknown", "meta-size-a-string", "meta-size-other",
    "meta-channels-zero", "meta-mean-a-string", "meta-deep"])


@pytest.mark.parametrize("name", EXPORT_CASES)
def test_a_damaged_export_is_one_error(name, cli, tmp_path):
    for good in (digits_export(), faces_export()):
        file, data = export_corpus(good)[name]
        export = shutil.copytree(good, tmp_path / good.name)
        if data is None:
            (export / file).unlink()
        else:
            (export / file).write_bytes(data)
        image = np.zeros((40, 40), np.uint8)
        try:
            model = load_image_model(export)
            model.embed([image]) if model.task == "embedding" else model.probabilities([image])
        except nnlab.NnlabError as exc:
            assert "\n" not in str(exc).strip(), str(exc)
        probe = sorted(sorted(split_folders(faces_run())["probes"].iterdir())[0].iterdir())[0]
        one_line_or_ok(cli("embed", export, probe, "--out", tmp_path / "e.npz", ok=False))


# ------------------------------------------------------------------ the Python API

class Weird:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("no array here")


PREDICT_CASES = {
    "strings": np.full((2, 8, 8), "x"), "objects": np.array([object(), object()]), "complex": np.zeros((8, 8), complex),
    "ragged-list": [np.zeros((8, 8)), np.zeros((3,))], "nan": np.full((8, 8), np.nan), "inf": np.full((8, 8), np.inf),
    "negative": np.full((8, 8), -5.0), "huge-values": np.full((8, 8), 1e30), "bool": np.ones((8, 8), bool),
    "two-channels": np.zeros((8, 8, 2)), "five-channels": np.zeros((8, 8, 5)), "zero-width": np.zeros((8, 0)),
    "one-pixel": np.zeros((1, 1)), "6-d": np.zeros((1, 1, 1, 8, 8, 1)), "none": None, "a-number": 3.5,
    "a-dict": {"a": 1}, "missing-file": "/nonexistent/image.png", "nested-lists": [[[1, 2], [3]]],
    "array-like-that-fails": Weird(), "list-with-none": [np.zeros((8, 8)), None],
}


@pytest.fixture(scope="module")
def api_run() -> nnlab.TrainedRun:
    return nnlab.load_run(digits_run())


@pytest.mark.parametrize("name", sorted(PREDICT_CASES))
def test_predict_with_what_is_no_image_answers_or_is_one_error(api_run, name):
    try:
        got = api_run.predict(PREDICT_CASES[name])
    except nnlab.NnlabError as exc:
        assert "\n" not in str(exc).strip()
        return
    assert np.isfinite(got.probs).all() and np.allclose(got.probs.sum(1), 1)


FIT_CASES = {
    "a-number": (123, None), "a-list": ([1, 2], None), "missing-file": ("/nonexistent.toml", None),
    "unknown-kind": ({"data": {"kind": "nope"}}, None), "epochs-negative": ({"train": {"epochs": -1}}, None),
    "epochs-a-string": ({"train": {"epochs": "five"}}, None), "lr-nan": ({"optim": {"lr": float("nan")}}, None),
    "override-not-a-list": ({}, 5), "override-no-equals": ({}, ["train.epochs"]),
    "override-unknown-key": ({}, ["train.nope=1"]), "override-bad-value": ({}, ["train.epochs=[1"]),
    "override-a-dict-bad-key": ({}, {"train.nope": 1}), "override-of-numbers": ({}, [1, 2]), "section-a-number": ({"train": 5}, None),
    "batch-zero": ({"data": {"batch_size": 0}}, None), "huge-image": ({"data": {"image_size": 10**9}}, None),
}


@pytest.mark.parametrize("name", sorted(FIT_CASES))
def test_fit_with_meaningless_parameters_is_one_error_and_writes_nothing(name, tmp_path):
    config, overrides = FIT_CASES[name]
    with pytest.raises(nnlab.NnlabError) as exc:
        nnlab.fit(config, overrides, out=tmp_path / "run", echo=False)
    assert "\n" not in str(exc.value).strip() or "ConfigError" in type(exc.value).__name__
    assert not (tmp_path / "run").exists()
