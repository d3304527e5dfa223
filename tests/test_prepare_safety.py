"""`nnlab data prepare --out` never deletes what is not a store, replaces a store only with
--overwrite, gives the store the umask's permissions, and refuses an empty result unless asked."""

from __future__ import annotations

import gzip
import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from nnlab.cli.app import app
from nnlab.errors import DataError
from nnlab.store.format import StrokeStore
from nnlab.store.prepare import prepare
from nnlab.strokes.drawing import Drawing


@pytest.fixture
def cat(shared_data):
    return shared_data / "quickdraw" / "simplified" / "cat.ndjson"


def test_a_folder_with_any_meta_json_is_left_alone(cat, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "meta.json").write_text("{}")
    (out / "notes.txt").write_text("precious")
    (out / "sub" / "data.bin").write_bytes(b"\x00" * 10)
    os.chmod(out, 0o755)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(DataError, match="not a stroke store; .*\\(nothing was changed\\)"):
        prepare([cat], out, workers=1)
    with pytest.raises(DataError, match="not a stroke store"):
        StrokeStore.from_drawings([Drawing([np.array([[0, 0], [1, 1]])], word="a")]).save(out)
    # before: everything but meta.json was deleted and the folder became drwx------
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert (out / "notes.txt").read_text() == "precious"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_a_store_is_replaced_only_with_overwrite(cat, shared_data, tmp_path):
    out = tmp_path / "s"
    prepare([cat], out, workers=1)
    dog = shared_data / "quickdraw" / "simplified" / "dog.ndjson"
    with pytest.raises(DataError, match="pass --overwrite"):
        prepare([dog], out, workers=1)
    assert StrokeStore.open(out).classes == ["cat"]
    assert prepare([dog], out, workers=1, overwrite=True).classes == ["dog"]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no staging or old folder left
    r = CliRunner().invoke(app, ["data", "prepare", str(cat), "--out", str(out), "--workers", "1"])
    assert r.exit_code == 1 and isinstance(r.exception, DataError)  # main() turns it into exit 2
    r = CliRunner().invoke(app, ["data", "prepare", str(cat), "--out", str(out), "--workers", "1", "--overwrite"])
    assert r.exit_code == 0 and StrokeStore.open(out).classes == ["cat"], r.output


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_store_permissions_follow_the_umask(cat, tmp_path, umask):
    old = os.umask(umask)
    try:
        prepare([cat], tmp_path / "s", workers=1)
        StrokeStore.from_drawings([Drawing([np.array([[0, 0], [1, 1]])], word="a")]).save(tmp_path / "t")
    finally:
        os.umask(old)
    for name in ("s", "t"):
        # before: 0o700 (mkdtemp's mode) whatever the umask
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o777 & ~umask


def _empty_inputs(folder):
    (folder / "a.ndjson").write_bytes(b"")
    (folder / "b.bin").write_bytes(b"")
    (folder / "c.ndjson.gz").write_bytes(gzip.compress(b""))
    (folder / "d.csv").write_text("countrycode,drawing,key_id,recognized,timestamp,word\n")
    return sorted(folder.iterdir())


def test_an_empty_input_is_an_error_unless_allowed(tmp_path):
    (tmp_path / "in").mkdir()
    for f in _empty_inputs(tmp_path / "in"):
        with pytest.raises(DataError, match=f"no drawing to write from 1 file\\(s\\) \\({f.name}\\).*--allow-empty"):
            prepare([f], tmp_path / f"s-{f.name}", workers=1)
        assert not (tmp_path / f"s-{f.name}").exists()
        store = prepare([f], tmp_path / f"e-{f.name}", workers=1, allow_empty=True)
        assert len(store) == 0 and json.loads((tmp_path / f"e-{f.name}" / "meta.json").read_text())["num_drawings"] == 0
