"""kill -9 at any moment of a short CPU run, then `resume`: the result equals the uninterrupted run
in weights, optimiser state, history.csv (timings aside), the best checkpoints and metrics.json's
epochs, and no partial file is left. One training passes every moment: at each, the run directory is
copied as a kill -9 would leave it (what is written is on disk, nothing more happens), and each copy
is resumed. One moment is a real SIGKILL of a `nnlab run` process, by the NNLAB_TEST_KILL_AT hook
(`nnlab.fileio.kill_point`)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nnlab.evaluation.results
import nnlab.fileio
import nnlab.runs.run
import nnlab.training.checkpoint
from nnlab.config import load_config
from nnlab.fileio import KILL_AT_ENV
from nnlab.runs.run import Run
from nnlab.training import fit

# recipes/doodles-demo.toml shrunk: synthetic doodles, augmentation (RNG state), cosine warm-up,
# best-2 checkpoints by MAP@3; 4 epochs of 3 steps.
RECIPE = """
name = "kill-test"
seed = 0
[data]
kind = "synth"
classes = 4
per_class = 16
image_size = 16
augment = true
val_fraction = 0.25
test_fraction = 0.0
batch_size = 8
num_workers = 0
[model]
name = "lenet_alpha"
[optim]
name = "adamw"
lr = 0.01
[schedule]
name = "cosine"
warmup_epochs = 0.5
[train]
epochs = 4
steps_per_epoch = 3
keep_best = 2
threads = 1
[eval]
main_metric = "map3"
"""
TIMING = {"epoch_seconds", "images_per_second", "data_wait_fraction", "model_images_per_second"}
# (point, occurrence): every kind of moment, from the first checkpoint to the last result file
MOMENTS = [("checkpoint-tmp-written", 1), ("best-saved", 1), ("history-appended", 1), ("checkpoint-saved", 1),
           ("checkpoint-tmp-written", 4), ("history-appended", 2), ("checkpoint-saved", 2),
           ("best-saved", 3), ("text-tmp-written", 9), ("checkpoint-saved", 4),
           ("predictions-written", 1), ("metrics-written", 1)]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kill") / "recipe.toml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> tuple[Run, dict[str, Path]]:
    """The uninterrupted run, and a copy of its directory at each of MOMENTS (keyed `point:occurrence`)."""
    root = tmp_path_factory.mktemp("ref")
    out, snapshots, counts = root / "run", {}, {}

    def snapshot(name: str) -> None:  # in place of kill_point: the directory at that instant
        counts[name] = counts.get(name, 0) + 1
        if (name, counts[name]) in MOMENTS:
            moment = f"{name}:{counts[name]}"
            snapshots[moment] = shutil.copytree(out, root / moment.replace(":", "-"))

    with pytest.MonkeyPatch.context() as mp:
        for module in (nnlab.fileio, nnlab.runs.run, nnlab.training.checkpoint, nnlab.evaluation.results):
            mp.setattr(module, "kill_point", snapshot)
        run = fit(load_config(recipe), out=out)
    assert sorted(snapshots) == sorted(f"{p}:{n}" for p, n in MOMENTS)  # every moment was reached
    return run, snapshots


def history(run: Run) -> list[dict[str, str]]:
    with open(run.path / "history.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def killed_run(recipe: Path, out: Path, moment: str) -> int:
    """`nnlab run` in a new interpreter until the kill at `moment`; returns the exit status (the signal,
    negated). A real process: that SIGKILL leaves what the snapshots stand for is the thing tested."""
    env = os.environ | {KILL_AT_ENV: moment}
    return subprocess.run([sys.executable, "-m", "nnlab", "run", str(recipe), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600).returncode


@pytest.mark.parametrize(("point", "occurrence"), MOMENTS, ids=[f"{p}-{n}" for p, n in MOMENTS])
def test_kill_then_resume_equals_uninterrupted(recipe, reference, tmp_path, point, occurrence):
    reference, snapshots = reference
    out = tmp_path / "run"
    if (point, occurrence) == ("checkpoint-saved", 2):
        # the moment (last.pt replaced, history not yet appended) through the real command line
        assert killed_run(recipe, out, f"{point}:{occurrence}") == -signal.SIGKILL
    else:
        shutil.copytree(snapshots[f"{point}:{occurrence}"], out)
    resumed = fit(Run.open(out).config, resume_run=Run.open(out))
    a = torch.load(reference.checkpoints / "last.pt", weights_only=True)
    b = torch.load(resumed.checkpoints / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert same(a["model"], b["model"]) and same(a["optimizer"], b["optimizer"])
    assert same(a["best"], b["best"]) and same(a["scheduler"], b["scheduler"])
    assert history(resumed) == history(reference)
    # one train.log line per epoch: none lost by a kill after the checkpoint, none twice after a retrained epoch
    epochs = [line.split()[1] for line in (out / "train.log").read_text().splitlines() if line.startswith("epoch ")]
    assert epochs == ["1/4", "2/4", "3/4", "4/4"]  # (the notes of each session aside)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    assert sorted(p.name for p in resumed.checkpoints.iterdir()) == \
        sorted(p.name for p in reference.checkpoints.iterdir())
    assert not list(out.rglob("*.tmp"))


def test_a_kill_at_any_write_of_export_leaves_the_old_export_or_the_new(tmp_path, monkeypatch):
    """`nnlab export --overwrite` over an export: the folder is copied at every write point (what a kill -9
    there leaves) and each copy is a whole export that loads, the old one (2 sample drawings) or the
    new (5); an export into a new folder leaves nothing or a whole export."""
    from doodle_model import tiny_run

    import nnlab.inference.models.export as export_mod
    from nnlab.inference.models.backends import load_backend
    from nnlab.inference.models.export import EXPORT_FOLDER, export_onnx

    out, fresh = tmp_path / "export", tmp_path / "fresh"
    export_onnx(tiny_run(), out, samples=2)
    snapshots = []

    def snapshot(name: str) -> None:
        for folder in (out, fresh):
            where = tmp_path / f"snap-{len(snapshots)}-{folder.name}-{name}"
            if folder.exists():
                shutil.copytree(folder, where)
            snapshots.append(where)

    monkeypatch.setattr(nnlab.fileio, "kill_point", snapshot)
    monkeypatch.setattr(export_mod, "kill_point", snapshot)
    export_onnx(tiny_run(), out, samples=5, overwrite=True)
    export_onnx(tiny_run(), fresh, samples=5)
    assert len(snapshots) >= 8  # classes.txt, preprocessing.json, all written, the swap; twice
    seen = set()
    for snap in snapshots:
        if not snap.exists():
            assert "fresh" in snap.name  # before its swap, a new export is no folder at all
            continue
        assert EXPORT_FOLDER.owns(snap), sorted(p.name for p in snap.iterdir())
        assert load_backend(snap).classes == (snap / "classes.txt").read_text().split()
        seen.add(len((snap / "samples.ndjson").read_text().splitlines()))
    assert seen == {2, 5}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing left beside them
    # a kill right after the swap leaves the old content in a stage folder: the next export removes it,
    # not the stage of a writer still alive (this process)
    dead, live = tmp_path / ".export.partial-999999999-abc", tmp_path / f".export.partial-{os.getpid()}-abc"
    for stage in (dead, live):
        shutil.copytree(out, stage)
    monkeypatch.setattr(nnlab.fileio, "kill_point", lambda name: None)
    monkeypatch.setattr(export_mod, "kill_point", lambda name: None)
    export_onnx(tiny_run(), out, samples=2, overwrite=True)
    assert not dead.exists() and live.is_dir()
