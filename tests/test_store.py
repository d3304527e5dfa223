"""The packed stroke store: prepare, open, access, split, export round trips, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from nnlab.cli.app import app
from nnlab.errors import ConfigError, DataError
from nnlab.ingest.chunks import read_drawings
from nnlab.ingest.sources import find_sources
from nnlab.ingest.writers import ndjson_line
from nnlab.store.export import export
from nnlab.store.format import StrokeStore
from nnlab.store.prepare import prepare
from nnlab.store.splits import key_id_split
from nnlab.strokes.drawing import Drawing, StrokeBatch
from nnlab.strokes.simplify import simplify_strokes

ARRAYS = ("points", "stroke_ptr", "drawing_ptr", "labels", "key_ids", "countries", "recognized", "timestamps")


def strokes_of(batch, d):
    """Strokes of drawing d of a StrokeBatch as (n, 2) or (n, 3) arrays."""
    out = []
    for s in range(batch.drawing_ptr[d], batch.drawing_ptr[d + 1]):
        a, b = batch.stroke_ptr[s], batch.stroke_ptr[s + 1]
        xy = batch.points[a:b]
        out.append(xy if batch.time is None else np.column_stack([xy, batch.time[a:b]]))
    return out


def _same(a: StrokeStore, b: StrokeStore) -> None:
    assert a.classes == b.classes
    for name in ARRAYS + ("time",):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


@pytest.fixture(scope="module")
def qd_store(shared_data, tmp_path_factory) -> StrokeStore:
    return prepare([shared_data / "quickdraw" / "simplified"], tmp_path_factory.mktemp("qd") / "store", workers=1)


def test_prepare_shared_simplified(qd_store, shared_data):
    s = qd_store
    assert len(s) == 8600 and len(s.classes) == 344
    assert s.kind == "simplified" and s.points.dtype == np.uint8 and s.time is None
    assert set(s.counts().values()) == {25}
    assert s.classes == sorted(s.classes, key=str.lower)  # the Kaggle notebooks' order
    assert s.meta["not_recognized"] == 680 and s.meta["skipped"] == {} and s.meta["source_kind"] == "quickdraw"
    assert len(s.meta["sources"]) == 344
    assert (s.path / "classes.txt").read_text().splitlines() == s.classes
    assert isinstance(s.points, np.memmap)  # memory-mapped, not loaded
    first = json.loads((shared_data / "quickdraw" / "simplified" / "The Eiffel Tower.ndjson").open().readline())
    d = s[0]
    assert d.word == "The Eiffel Tower" and d.key_id == int(first["key_id"])
    assert [st.T.tolist() for st in d.strokes] == first["drawing"]


def test_export_ndjson_is_byte_exact_and_reprepare_is_lossless(qd_store, shared_data, tmp_path):
    out = tmp_path / "all.ndjson"
    assert export(qd_store, out, "ndjson") == 8600
    originals = b"".join(f.read_bytes() for f in find_sources([shared_data / "quickdraw" / "simplified"]))
    assert out.read_bytes() == originals
    _same(qd_store, prepare([out], tmp_path / "again", workers=1))


def test_export_csv_round_trip(qd_store, tmp_path):
    out = tmp_path / "train.csv.gz"
    export(qd_store, out, "csv")
    again = prepare([out], tmp_path / "again", workers=1)
    _same(qd_store, again)
    assert again.meta["sources"][0]["format"] == "csv"


def test_raw_store_keeps_time_and_round_trips(shared_data, tmp_path):
    files = find_sources([shared_data / "quickdraw" / "raw"])[:30]
    raw = prepare(files, tmp_path / "raw", workers=2)
    assert raw.kind == "raw" and raw.points.dtype == np.float32 and raw.time is not None
    d = raw[3]
    assert d.has_time and d.strokes[0].shape[1] == 3
    b = raw.batch([3, 0])
    assert b.time is not None and np.array_equal(strokes_of(b, 0)[0], d.strokes[0])
    export(raw, tmp_path / "raw.ndjson", "ndjson")
    _same(raw, prepare([tmp_path / "raw.ndjson"], tmp_path / "raw2", workers=1))
    simp = prepare(files, tmp_path / "simp", simplify=True, workers=1)
    assert simp.kind == "simplified" and simp.time is None
    ref = [s for f in files for d in read_drawings(f) for s in simplify_strokes(d.strokes)]
    assert np.array_equal(np.asarray(simp.points), np.concatenate(ref))
    with pytest.raises(DataError, match="mix raw and simplified"):
        prepare([files[0], shared_data / "quickdraw" / "simplified" / "cat.ndjson"], tmp_path / "mixed", workers=1)


def test_output_does_not_depend_on_workers(shared_data, tmp_path):
    files = find_sources([shared_data / "quickdraw" / "simplified"])[:12]
    _same(prepare(files, tmp_path / "one", workers=1), prepare(files, tmp_path / "two", workers=2))


def test_batch_is_a_vectorised_gather(qd_store):
    idx = np.array([5, 8599, 0, 5, -1])
    b = qd_store.batch(idx)
    assert isinstance(b, StrokeBatch) and len(b) == 5 and b.points.dtype == np.uint8
    for k, i in enumerate(idx):
        assert [s.tolist() for s in strokes_of(b, k)] == [s.tolist() for s in qd_store[int(i)].strokes]
    assert len(qd_store.batch([])) == 0
    with pytest.raises(IndexError):
        qd_store.batch([8600])
    with pytest.raises(IndexError):
        qd_store[-8601]


def test_indices_of_and_metadata(qd_store):
    cats = qd_store.indices_of("cat")
    assert len(cats) == 25 and all(qd_store[int(i)].word == "cat" for i in cats[:3])
    both = qd_store.indices_of(["cat", "The_Eiffel_Tower"])  # Kaggle labels work too
    assert len(both) == 50
    with pytest.raises(DataError, match="did you mean 'cat'"):
        qd_store.indices_of("cats")
    assert qd_store.countries.dtype == np.dtype("S2") and qd_store.recognized.dtype == bool
    assert qd_store.labels.dtype == np.int16 and qd_store.key_ids.dtype == np.int64


def test_split_by_key_id_is_stable(qd_store):
    sp = qd_store.split(0.1, 0.1)
    n = {k: len(v) for k, v in sp.items()}
    assert sum(n.values()) == 8600 and 650 < n["val"] < 1100 and 650 < n["test"] < 1100
    assert not set(sp["val"]) & set(sp["train"])
    keys = np.asarray(qd_store.key_ids)
    # adding drawings (and reordering) never moves a drawing to another split
    more = np.concatenate([np.arange(10**6, 10**6 + 5000), keys[::-1]])
    sp2 = key_id_split(more, 0.1, 0.1)
    for name in ("train", "val", "test"):
        assert set(keys[sp[name]]) == set(more[sp2[name]]) & set(keys)
    assert not np.array_equal(key_id_split(keys, 0.1, 0.1, salt="other")["val"], sp["val"])
    with pytest.raises(ConfigError):
        key_id_split(keys, 0.6, 0.5)


def test_filters_and_class_list(shared_data, tmp_path):
    files = find_sources([shared_data / "quickdraw" / "simplified"])[:6]
    s = prepare(files, tmp_path / "a", recognized_only=True, max_per_class=10, workers=1)
    assert bool(np.asarray(s.recognized).all()) and max(s.counts().values()) == 10
    assert s.meta["filtered"]["not_recognized"] > 0 and s.meta["filtered"]["over_max_per_class"] > 0
    words = [json.loads(f.open().readline())["word"] for f in files]
    keep = [words[2], words[0]]  # a class list keeps its own order; other words are unknown
    s2 = prepare(files, tmp_path / "b", classes=keep, workers=1)
    assert s2.classes == keep and len(s2) == 50 and s2.meta["skipped"] == {"unknown_word": 100}
    with pytest.raises(DataError, match="unknown_word"):
        prepare(files, tmp_path / "c", classes=keep, on_bad="error", workers=1)


def test_duplicate_key_ids_across_files(shared_data, tmp_path):
    src = shared_data / "quickdraw" / "simplified" / "cat.ndjson"
    lines = src.read_text().splitlines()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.ndjson").write_text("\n".join(lines[:10]) + "\n")
    (tmp_path / "in" / "b.ndjson").write_text("\n".join(lines[5:]) + "\n")
    s = prepare([tmp_path / "in"], tmp_path / "s", workers=2)
    assert len(s) == 25 and s.meta["skipped"] == {"duplicate_key_id": 5}
    assert s.meta["skipped_examples"][0] == {"file": str(tmp_path / "in" / "b.ndjson"), "line": 1,
                                             "reason": "duplicate_key_id"}
    with pytest.raises(DataError, match=r"b\.ndjson: line 1: duplicate_key_id"):
        prepare([tmp_path / "in"], tmp_path / "s2", on_bad="error", workers=1)


def test_bad_rows_are_counted_in_meta_and_stop_with_on_bad_error(tmp_path):
    good = '{"word":"cat","key_id":"%d","drawing":[[[1,2],[3,4]]]}'
    lines = [good % 1, good[:-5] % 2, '{"word":"cat","key_id":"3","drawing":[[[1,2,3],[3,4]]]}', good % 4]
    (tmp_path / "x.ndjson").write_text("\n".join(lines) + "\n")
    s = prepare([tmp_path / "x.ndjson"], tmp_path / "s", workers=1)
    assert len(s) == 2 and s.meta["skipped"] == {"length_mismatch": 1, "malformed_json": 1}
    assert s.meta["skipped_total"] == 2
    with pytest.raises(DataError, match=r"x\.ndjson: line 2: malformed_json"):
        prepare([tmp_path / "x.ndjson"], tmp_path / "s2", on_bad="error", workers=1)
    assert not (tmp_path / "s2").exists()  # nothing half-written


def test_from_drawings_save_open_round_trip(tmp_path):
    drawings = [Drawing([np.array([[0, 0], [255, 10]])], word="b", key_id=1, countrycode="US"),
                Drawing([np.array([[3, 4]]), np.array([[5, 6], [7, 8]])], word=None, key_id=2,
                        timestamp="2017-03-02 23:25:10.07453 UTC"),
                Drawing([np.array([[1, 1], [2, 2]])], word="A", key_id=3, recognized=False)]
    mem = StrokeStore.from_drawings(drawings)
    assert mem.classes == ["A", "b"] and mem.kind == "simplified" and mem.labels.tolist() == [1, -1, 0]
    mem.save(tmp_path / "s")
    disk = StrokeStore.open(tmp_path / "s")
    _same(mem, disk)
    assert disk[1].word is None and disk[1].timestamp == "2017-03-02 23:25:10.07453 UTC"
    assert not disk[2].recognized and disk.meta["unlabelled"] == 1
    raw = StrokeStore.from_drawings([Drawing([np.array([[0.5, 1.0, 0.0], [2.0, 3.0, 17.0]])], word="x")])
    assert raw.kind == "raw" and raw.time.tolist() == [0.0, 17.0]
    with pytest.raises(DataError, match="not in the class list"):
        StrokeStore.from_drawings(drawings, classes=["A"])


def test_open_rejects_missing_corrupt_and_other_versions(tmp_path):
    with pytest.raises(DataError, match="not a stroke store"):
        StrokeStore.open(tmp_path / "nothing")
    StrokeStore.from_drawings([Drawing([np.array([[0, 0], [1, 1]])], word="a", key_id=1)]).save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta | {"version": 99}))
    with pytest.raises(DataError, match="version 99"):
        StrokeStore.open(tmp_path / "s")
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "s" / "labels.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="labels.npy"):
        StrokeStore.open(tmp_path / "s")
    (tmp_path / "s" / "labels.npy").unlink()
    with pytest.raises(DataError, match="labels.npy: missing"):
        StrokeStore.open(tmp_path / "s")
    np.save(tmp_path / "s" / "labels.npy", np.zeros(5, np.int16))
    with pytest.raises(DataError, match="labels"):
        StrokeStore.open(tmp_path / "s")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not a stroke store; choose another"):
        StrokeStore.from_drawings([Drawing([np.array([[0, 0]])], word="a")]).save(tmp_path / "other")


def test_cli_prepare_info_export_show(shared_data, tmp_path):
    runner = CliRunner()
    files = [str(f) for f in find_sources([shared_data / "quickdraw" / "simplified"])[:3]]
    r = runner.invoke(app, ["data", "prepare", *files, "--out", str(tmp_path / "s"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "75 drawings, 3 classes" in r.output
    r = runner.invoke(app, ["data", "info", str(tmp_path / "s")])
    assert r.exit_code == 0 and "The Eiffel Tower" in r.output and "skipped rows: none" in r.output
    r = runner.invoke(app, ["data", "export", str(tmp_path / "s"), "--format", "ndjson", "--out", str(tmp_path / "o.ndjson")])
    assert r.exit_code == 0
    assert (tmp_path / "o.ndjson").read_text().splitlines()[0] == open(files[0]).readline().rstrip("\n")
    r = runner.invoke(app, ["data", "show", str(tmp_path / "s"), "--n", "4", "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 0 and (tmp_path / "g.png").stat().st_size > 1000


def test_cli_on_bad_error_exits_2_naming_file_and_line(tmp_path, monkeypatch, capsys):
    from nnlab.cli import main

    (tmp_path / "bad.ndjson").write_text('{"word":"cat","key_id":"1","drawing":[[[1,2],[3]]]}\n')
    monkeypatch.setattr(sys, "argv", ["nnlab", "data", "prepare", str(tmp_path / "bad.ndjson"),
                                      "--out", str(tmp_path / "s"), "--on-bad", "error"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert f"{tmp_path / 'bad.ndjson'}: line 1: length_mismatch" in capsys.readouterr().err


def test_memory_stays_bounded_as_drawings_grow(shared_data, tmp_path):
    """Peak RSS of prepare on 4x the drawings grows by little more than the per-drawing arrays
    (keys and labels, ~30 bytes a drawing), not by the data (~500 bytes a drawing here)."""
    base = [ndjson_line(d) for f in find_sources([shared_data / "quickdraw" / "simplified"]) for d in read_drawings(f)]

    def make(n_copies: int):
        p = tmp_path / f"x{n_copies}.ndjson"
        with open(p, "w") as f:
            for c in range(n_copies):
                for line in base:
                    key = line.split('"key_id":"')[1].split('"')[0]
                    f.write(line.replace(f'"key_id":"{key}"', f'"key_id":"{int(key) + c * 10**16}"') + "\n")
        return p

    # the peak above the resident size just before each prepare (VmHWM reset through clear_refs);
    # one process for both sizes, so that the imports are paid once
    script = textwrap.dedent("""
        import re, resource, sys
        from nnlab.store.prepare import prepare
        def status(key):
            return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
        for src, out in zip(sys.argv[1::2], sys.argv[2::2]):
            try:
                open("/proc/self/clear_refs", "w").write("5")
                base = status("VmRSS")
            except OSError:
                base = 0
            prepare([src], out, workers=1, chunk_bytes=1 << 20)
            peak = status("VmHWM") if base else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(peak - base)
    """)
    args = [str(a) for n in (1, 4) for a in (make(n), tmp_path / f"s{n}")]
    # a fresh process: its peak RSS is the measurement
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    peaks = dict(zip((1, 4), (int(v) / 1024 for v in out.stdout.split()[-2:])))  # MB above the start
    for n in (1, 4):
        assert len(StrokeStore.open(tmp_path / f"s{n}")) == 8600 * n
    grown = peaks[4] - peaks[1]
    data_mb = (tmp_path / "x4.ndjson").stat().st_size / 2**20 - (tmp_path / "x1.ndjson").stat().st_size / 2**20
    print(f"peak RSS {peaks}, grew {grown:.1f} MB for {data_mb:.0f} MB more input")
    assert grown < 0.25 * data_mb + 8


def test_unlabelled_kaggle_test_file_round_trip(tmp_path):
    text = ('key_id,countrycode,drawing\n9000003627287624,DE,"[[[17, 18, 20], [48, 41, 36]]]"\n'
            '9000010688666847,UA,"[[[0, 255], [3, 0]], [[4, 4], [9, 9]]]"\n')
    (tmp_path / "test_simplified.csv").write_text(text)
    s = prepare([tmp_path / "test_simplified.csv"], tmp_path / "s", workers=1)
    assert len(s) == 2 and s.classes == [] and s.labels.tolist() == [-1, -1] and s.meta["unlabelled"] == 2
    export(s, tmp_path / "out.csv", "csv")  # all unlabelled: Kaggle's test columns
    assert (tmp_path / "out.csv").read_text() == text
    with pytest.raises(DataError, match="unknown export format"):
        export(s, tmp_path / "out.x", "parquet")
