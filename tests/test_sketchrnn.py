"""sketch-rnn's stroke-3 .npz files: exact round trips on real drawings, the file's split kept as the
store's, and hostile pickles refused without running anything."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnlab.errors import DataError
from nnlab.ingest.chunks import read_drawings
from nnlab.ingest.sketchrnn import read_sketchrnn, synthetic_key_ids
from nnlab.store.format import StrokeStore
from nnlab.store.prepare import prepare
from nnlab.strokes.stroke3 import from_stroke3, packed_to_stroke3, to_stroke3

WORDS = ("cat", "The Eiffel Tower")


def _real_drawings(shared_data: Path, word: str) -> list[list[np.ndarray]]:
    lines = (shared_data / "quickdraw" / "simplified" / f"{word}.ndjson").read_text().splitlines()
    return [[np.array(s, np.int64).T for s in json.loads(line)["drawing"]] for line in lines]


def _sketchrnn_file(path: Path, splits: dict[str, list[list[np.ndarray]]]) -> Path:
    """A file as sketch-rnn builds it: np.savez_compressed of object arrays of (n, 3) int16."""
    arrays = {}
    for key, drawings in splits.items():
        a = np.empty(len(drawings), dtype=object)
        for k, d in enumerate(drawings):
            a[k] = to_stroke3(d)
        arrays[key] = a
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def npz_files(shared_data, tmp_path_factory) -> tuple[Path, dict]:
    """Two words of real simplified drawings in sketch-rnn files (15/5/5 per word)."""
    folder = tmp_path_factory.mktemp("sketchrnn")
    by_word = {}
    for w in WORDS:
        d = _real_drawings(shared_data, w)
        by_word[w] = {"train": d[:15], "valid": d[15:20], "test": d[20:25]}
        _sketchrnn_file(folder / f"{w}.npz", by_word[w])
    return folder, by_word


def test_stroke3_conversion_is_exact_on_real_drawings(shared_data):
    drawings = _real_drawings(shared_data, "cat") + _real_drawings(shared_data, "octopus")
    for d in drawings:
        rows = to_stroke3(d)
        assert rows.dtype == np.int16 and rows.shape == (sum(len(s) for s in d), 3)
        back = from_stroke3(rows)
        assert len(back) == len(d) and all(np.array_equal(a, b) for a, b in zip(back, d))
    # magenta's utils.lines_to_strokes, the independent reference: offsets from (0, 0), eos after a line
    d = drawings[0]
    strokes = [[0, 0, 0]] + [[*p, int(i == len(s) - 1)] for s in d for i, p in enumerate(s.tolist())]
    ref = np.array(strokes)
    ref[1:, :2] -= ref[:-1, :2].copy()
    assert np.array_equal(to_stroke3(d), ref[1:])


def test_prepare_keeps_the_split_and_export_round_trips(npz_files, tmp_path, cli):
    folder, by_word = npz_files
    r = cli("data", "prepare", folder, "--out", tmp_path / "store", "--workers", "1")
    assert "splits from the files: train 30, val 10, test 10" in r.stdout
    store = StrokeStore.open(tmp_path / "store")
    splits = store.split(0.3, 0.0)  # the file's split wins over the fractions
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 10}
    for name, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        for w in WORDS:
            got = [store[int(i)] for i in splits[name] if store.classes[store.labels[i]] == w]
            want = by_word[w][key]
            assert len(got) == len(want)
            for g, d in zip(got, want):
                assert all(np.array_equal(a, b) for a, b in zip(g.strokes, d)) and len(g.strokes) == len(d)
            # synthetic key_ids: word + split + index, the same on every read
            assert [g.key_id for g in got] == synthetic_key_ids(w, name, np.arange(len(want))).tolist()
    assert len(set(np.asarray(store.key_ids).tolist())) == len(store)

    cli("data", "export", tmp_path / "store", "--format", "sketchrnn", "--out", tmp_path / "out")
    for w in WORDS:
        with np.load(folder / f"{w}.npz", allow_pickle=True) as a, \
                np.load(tmp_path / "out" / f"{w}.npz", allow_pickle=True) as b:  # our own files: trusted here
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                assert b[k].dtype == object and len(a[k]) == len(b[k])
                assert all(x.dtype == np.int16 and np.array_equal(x, y) for x, y in zip(b[k], a[k]))
    # and back in: the same store
    again = prepare(tmp_path / "out", tmp_path / "again", workers=1)
    assert np.array_equal(np.asarray(again.points), np.asarray(store.points))
    assert np.array_equal(np.asarray(again.splits), np.asarray(store.splits))


def test_training_data_takes_the_files_split(npz_files, tmp_path):
    from nnlab.config import validate
    from nnlab.datasets.strokes import build_stroke_data

    folder, _ = npz_files
    prepare(folder, tmp_path / "store", workers=1)
    cfg = validate({"name": "sk", "data": {"kind": "strokes", "path": str(tmp_path / "store"), "image_size": 32,
                                           "val_fraction": 0.5, "test_fraction": 0.0},
                    "model": {"name": "timm:mobilenetv3_small_050"}})
    assert build_stroke_data(cfg).info["sizes"] == {"train": 30, "val": 10, "test": 10}


def test_stores_without_a_split_file_still_split_by_hash(tmp_path):
    d = [np.array([[1, 2], [3, 4]])]
    rows = [packed_to_stroke3(np.array([[1, 2], [3, 4]]), np.array([0, 2]), np.array([0, 1]))[0]]
    assert np.array_equal(rows[0], to_stroke3(d))
    _sketchrnn_file(tmp_path / "dog.npz", {"train": [d], "valid": [], "test": []})
    store = prepare(tmp_path / "dog.npz", tmp_path / "s", workers=1)
    assert store.meta["split_counts"] == {"train": 1, "val": 0, "test": 0}
    plain = StrokeStore.from_drawings(list(store))
    assert plain.splits is None and len(plain.split(0.5)["train"]) + len(plain.split(0.5)["val"]) == 1


class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


def _hostile_npz(path: Path, payload: bytes, key: str = "train") -> Path:
    """A zip whose .npy member announces an object array and carries `payload` as its pickle."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{key}.npy", f.getvalue() + payload)
    return path


def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path, cli):
    import builtins
    import os

    marker = tmp_path / "ran"
    payloads = {
        "os.system": pickle.dumps(_Evil(os.system, f"touch {marker}")),
        "eval": pickle.dumps(_Evil(builtins.eval, f"open({str(marker)!r}, 'w')")),
        # a numpy array holding a hostile object among drawings
        "nested": pickle.dumps(np.array([np.zeros((2, 3), np.int16), _Evil(os.system, f"touch {marker}")],
                                        dtype=object)),
    }
    for name, payload in payloads.items():
        path = _hostile_npz(tmp_path / f"{name}.npz", payload)
        r = cli("data", "prepare", path, "--out", tmp_path / f"store-{name}", "--workers", "1", ok=False)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{name}.npz: key 'train'" in lines[0] and "refused global" in lines[0], lines
        assert not marker.exists() and not (tmp_path / f"store-{name}").exists()


@pytest.mark.parametrize("what, arrays, message", [
    ("strings", {"train": np.array(["a", "b"], dtype=object)}, "drawing 0 is str"),
    ("two columns", {"valid": [np.zeros((4, 2), np.int16)]}, "drawing 0 is a int16 array of shape (4, 2)"),
    ("complex", {"test": [np.zeros((4, 3), np.complex64)]}, "complex64"),
    ("other key", {"images": [np.zeros((4, 3), np.int16)]}, "not a sketch-rnn key"),
])
def test_wrong_arrays_are_refused_naming_file_and_key(tmp_path, what, arrays, message):
    out = {}
    for k, v in arrays.items():
        a = np.empty(len(v), dtype=object)
        a[:] = list(v) if not isinstance(v, np.ndarray) else v
        out[k] = a
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, **out)
    with pytest.raises(DataError, match=r"bad\.npz: key '" + next(iter(arrays))) as exc:
        read_sketchrnn(path)
    assert message in str(exc.value)


def test_bad_drawings_are_bad_rows(tmp_path):
    a = np.empty(3, dtype=object)
    a[0] = np.array([[10, 10, 0], [5, 5, 1]], np.int16)
    a[1] = np.array([[-3, 10, 1]], np.int16)  # leaves the 0..255 grid
    a[2] = np.array([[1, 1, 7]], np.int16)  # pen state 7
    np.savez_compressed(tmp_path / "cat.full.npz", train=a)
    with pytest.raises(DataError, match=r"train drawing 2: out_of_range"):
        list(read_drawings(tmp_path / "cat.full.npz", on_bad="error"))
    store = prepare(tmp_path / "cat.full.npz", tmp_path / "s", workers=1)
    assert len(store) == 1 and store.classes == ["cat"]
    assert store.meta["skipped"] == {"out_of_range": 1, "bad_value": 1}
