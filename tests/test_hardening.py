"""One line and exit 2, never a traceback: damaged and unsafe checkpoints, configs that used to fail
late (or deep in NumPy), a full disk while checkpointing, preparing or predicting; Ctrl-C in
`nnlab run` says how to resume and exits 130."""

from __future__ import annotations

import errno
import json
import shutil
import sys

import pytest
import torch
from doodle_model import tiny_run

import nnlab.inference.kaggle.submission as submission
import nnlab.runs.run as run_mod
from nnlab.cli import main
from nnlab.config import load_config, validate
from nnlab.errors import ConfigError, DataError, ModelError, NnlabError
from nnlab.runs.run import Run
from nnlab.training.checkpoint import load_checkpoint


def run_cli(args, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nnlab", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def run_copy(tmp_path) -> Run:
    dest = tmp_path / "run"
    shutil.copytree(tiny_run(), dest)
    return Run.open(dest)


def test_damaged_checkpoints_name_the_others(run_copy, capsys, monkeypatch, tmp_path):
    last = run_copy.checkpoints / "last.pt"
    good = last.read_bytes()
    (run_copy.path / "metrics.json").unlink()  # an interrupted run: resume loads last.pt (a finished one says so)
    for damage, says in ((b"", "empty file"), (good[: len(good) // 2], "damaged")):
        last.write_bytes(damage)
        with pytest.raises(ModelError, match=f"last.pt: the checkpoint is damaged.*{says}|{says}.*best-e"):
            load_checkpoint(last)
        # before: empty -> exit 1 and nothing printed; truncated -> PytorchStreamReader traceback
        code, err = run_cli(["resume", str(run_copy.path)], capsys, monkeypatch)
        assert code == 2 and "damaged" in err and "best-e" in err and len(err.strip().splitlines()) == 1, err
    best = run_copy.best_checkpoint()
    best.write_bytes(best.read_bytes()[:100])
    (tmp_path / "x.ndjson").write_text('{"word":"cat","key_id":"1","drawing":[[[0,9],[0,9]]]}\n')
    code, err = run_cli(["predict", str(run_copy.path), str(tmp_path / "x.ndjson"), "--out", str(tmp_path / "s.csv")],
                        capsys, monkeypatch)
    assert code == 2 and best.name in err and "damaged" in err, err


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_with_code_is_refused_in_one_line(run_copy):
    torch.save({"model": _Evil()}, run_copy.checkpoints / "last.pt")
    with pytest.raises(ModelError, match="not a plain weights file .* refused for safety") as info:
        load_checkpoint(run_copy.checkpoints / "last.pt")
    assert "weights_only=False" not in str(info.value)  # before: torch's advice to turn the check off


def test_best_json_pointing_outside_the_run_is_refused(run_copy, tmp_path):
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    meta = run_copy.checkpoints / next(p.name for p in run_copy.checkpoints.glob("best-*.json"))
    data = json.loads(meta.read_text())
    for file in ("../../elsewhere.pt", str(tmp_path / "elsewhere.pt")):
        meta.write_text(json.dumps(data | {"file": file}))
        with pytest.raises(NnlabError, match="outside the run's checkpoints folder"):
            run_copy.best_checkpoint()


@pytest.mark.parametrize(("section", "values", "says"), [
    ("eval", {"main_metric": "map3", "top_k": 5}, "eval.top_k"),
    ("schedule", {"warmup_epochs": float("inf")}, "finite"),
    ("schedule", {"warmup_epochs": 1e300}, "warmup_epochs"),
    ("train", {"steps_per_epoch": 1e12}, "steps_per_epoch"),
    ("data", {"kind": "synth", "classes": 0}, "at least 1 class"),
    ("model", {"name": "mlp", "hidden": [1_000_000_000]}, "model.hidden"),
    ("data", {"kind": "folder", "path": "x", "classes": 3}, "not an option of kind 'folder' .*kinds: synth"),
])
def test_configs_that_failed_late_fail_up_front(section, values, says):
    # before: each was accepted (then KeyError, OverflowError, TypeError or out-of-memory later)
    with pytest.raises(ConfigError, match=says):
        validate({section: values}, "t.toml")


def test_deep_toml_is_a_config_error(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deep"):  # before: RecursionError
        load_config(path)


def _full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_predicting_leaves_no_tmp(run_copy, tmp_path, monkeypatch, shared_data):
    src = shared_data / "quickdraw" / "simplified" / "cat.ndjson"

    class FullWriter:
        def __init__(self, fh, **_kw):
            fh.write("key_id,word\n")

        def writerow(self, _row):
            _full()

    monkeypatch.setattr(submission.csv, "writer", FullWriter)
    with pytest.raises(DataError, match="the disk is full .* nothing was written"):
        submission.predict_submission([run_copy], src, tmp_path / "sub.csv")
    # before: OSError [Errno 28] and sub.csv.tmp left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_disk_full_while_checkpointing_keeps_the_previous_one(run_copy, monkeypatch):
    last = run_copy.checkpoints / "last.pt"
    before = last.read_bytes()

    def torch_save(_obj, path):
        open(path, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", torch_save)  # atomic_save imports torch when it runs
    with pytest.raises(DataError, match="last.pt: the disk is full.*previous last.pt is kept"):
        run_mod.atomic_save({"x": 1}, last)
    assert last.read_bytes() == before and not list(run_copy.checkpoints.glob("*.tmp"))


def test_disk_full_while_preparing(tmp_path, monkeypatch, shared_data):
    import nnlab.store.prepare as prep

    monkeypatch.setattr(prep, "_write_arrays", _full)
    with pytest.raises(DataError, match="the disk is full.*nothing was written"):
        prep.prepare([shared_data / "quickdraw" / "simplified" / "cat.ndjson"], tmp_path / "s", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_run_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import nnlab.api as api

    def interrupted(cfg, out=None, announce=None, **_kw):
        run = Run.create(cfg, out)
        announce(run)
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted)  # the training call behind nnlab.fit and `nnlab run`
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "t"\n[data]\nkind = "digits"\n')
    code, err = run_cli(["run", str(recipe), "--out", str(tmp_path / "run")], capsys, monkeypatch)
    # before: exit 0 and nothing printed
    assert code == 130 and err.strip() == f"interrupted; resume with nnlab resume {(tmp_path / 'run').resolve()}"
