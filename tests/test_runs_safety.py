"""`nnlab runs --remove-failed` deletes failed runs only: never the folder it was given, the working
directory, a user's files, a finished run or a run that a live process is training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nnlab
from nnlab.cli import main
from nnlab.runs.listing import list_runs
from nnlab.runs.run import Run, is_being_trained

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "data": {"kind": "digits", "image_size": 8, "batch_size": 256},
        "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1}}


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["nnlab", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    nnlab.fit(TINY, out=out, echo=False)
    return out


def test_a_project_folder_keeps_everything_but_its_failed_runs(finished, tmp_path, monkeypatch, capsys):
    proj = tmp_path / "proj"
    (proj / "notes").mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / "digits-lenet.toml", proj / "config.toml")  # a recipe copy is not a run
    (proj / "notes" / "thesis.txt").write_text("chapter 1")
    shutil.copytree(finished, proj / "done")
    (proj / "dead" / "checkpoints").mkdir(parents=True)  # a run that died before its first checkpoint
    shutil.copy(finished / "config.toml", proj / "dead" / "config.toml")
    (proj / "kept" / "checkpoints").mkdir(parents=True)  # failed too, but a user put a file in it
    shutil.copy(finished / "config.toml", proj / "kept" / "config.toml")
    (proj / "kept" / "my-notes.md").write_text("do not delete")
    monkeypatch.chdir(proj)

    code, out, err = cli(monkeypatch, capsys, "runs", ".", "--remove-failed")
    assert code == 0, err
    assert "removed 1 failed run" in out and "kept" in out and "my-notes.md" in out
    assert not (proj / "dead").exists()
    for kept in ("config.toml", "notes/thesis.txt", "done/metrics.json", "done/checkpoints", "kept/my-notes.md"):
        assert (proj / kept).exists(), kept
    assert {r.path.name: r.status for r in list_runs(proj)} == {"done": "finished", "kept": "failed"}


def test_the_working_directory_is_never_removed_even_when_it_is_a_failed_run(finished, tmp_path, monkeypatch,
                                                                             capsys):
    run = tmp_path / "dead"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(finished / "config.toml", run / "config.toml")
    monkeypatch.chdir(run)
    code, out, err = cli(monkeypatch, capsys, "runs", ".", "--remove-failed")
    assert code == 0, err
    assert "removed 0 failed runs" in out and "working directory" in out
    assert (run / "config.toml").is_file()


def test_a_run_being_trained_is_listed_as_training_and_never_removed(tmp_path, monkeypatch, capsys):
    # the process boundary is what this tests: the lock belongs to another, live process
    out = tmp_path / "live"
    script = (f"import nnlab; nnlab.fit({TINY!r} | {{'train': {{'epochs': 200}}}}, out={str(out)!r}, echo=False)")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, NNLAB_PROGRESS="0"))
    try:
        deadline = time.monotonic() + 120
        while not is_being_trained(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert is_being_trained(out)
        code, text, err = cli(monkeypatch, capsys, "runs", tmp_path, "--remove-failed")
        assert code == 0, err
        assert "training" in text.splitlines()[1] and "removed 0 failed runs" in text
        assert (out / "config.toml").is_file()
        with pytest.raises(nnlab.NnlabError, match="another process is training"):
            Run.open(out).hold()
    finally:
        proc.kill()
        proc.wait()
    assert not is_being_trained(out)  # the kernel drops the lock of a killed process


def test_a_finished_fit_releases_its_lock(finished):
    assert not is_being_trained(finished)
    run = Run.open(finished)
    run.hold()
    assert is_being_trained(finished)
    run.release()
    assert not is_being_trained(finished)


def test_damaged_history_or_metrics_make_one_row_unreadable_not_the_listing(finished, tmp_path):
    for name, junk in (("bad-history", ("history.csv", "epoch,loss\n1,abc\n")),
                       ("bad-metrics", ("metrics.json", "{not json"))):
        shutil.copytree(finished, tmp_path / name)
        (tmp_path / name / junk[0]).write_text(junk[1])
    shutil.copytree(finished, tmp_path / "good")
    status = {r.path.name: r.status for r in list_runs(tmp_path)}
    assert status == {"bad-history": "unreadable", "bad-metrics": "unreadable", "good": "finished"}


def test_a_failed_resume_epochs_changes_nothing(tmp_path):
    """Data moved away, an epoch count past the schema's bound, a string: refused before a file changes."""
    import numpy as np

    data = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, images=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), labels=np.repeat([0, 1, 2], 20))
    cfg = {"name": "npz", "data": {"kind": "npz", "path": str(data), "image_size": 8, "batch_size": 32},
           "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1}}
    out = tmp_path / "run"
    nnlab.fit(cfg, out=out, echo=False)
    before = {name: (out / name).read_bytes() for name in ("config.toml", "metrics.json", "history.csv")}
    with pytest.raises(nnlab.ConfigError, match="train.epochs"):
        nnlab.resume(out, epochs=200000, echo=False)
    with pytest.raises(nnlab.NnlabError, match="whole number"):
        nnlab.resume(out, epochs="5", echo=False)
    data.rename(tmp_path / "moved.npz")
    with pytest.raises(nnlab.DataError, match="no longer exists"):
        nnlab.resume(out, epochs=3, echo=False)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert nnlab.load_run(out).metrics["test"]  # report still works
    # a failure inside training, before a new epoch, puts config.toml and metrics.json back too
    (tmp_path / "moved.npz").write_bytes(b"not an npz any more")
    (tmp_path / "moved.npz").rename(data)
    with pytest.raises(nnlab.DataError):
        nnlab.resume(out, epochs=3, echo=False)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob("*.tmp"))


def test_a_run_failing_before_its_first_epoch_in_an_existing_folder_removes_only_what_it_wrote(tmp_path):
    out = tmp_path / "project"
    (out / "plots").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "plots" / "figure.png").write_bytes(b"mine too")
    cfg = {"name": "bad", "data": {"kind": "npz", "path": str(tmp_path / "missing.npz")},
           "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1}}
    (tmp_path / "missing.npz").write_bytes(b"not an npz")
    with pytest.raises(nnlab.DataError):
        nnlab.fit(cfg, out=out, echo=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "plots"]
    assert (out / "plots" / "figure.png").read_bytes() == b"mine too"
