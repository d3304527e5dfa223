"""kill -9 at any moment of a short CPU run, then `resume`: the result equals the uninterrupted run
in weights, optimiser state, history.csv (timings aside), the best checkpoints and metrics.json's
epochs, and no partial file is left. The kill moment is picked with the NNLAB_TEST_KILL_AT hook
(`nnlab.fileio.kill_point`), in a `nnlab run` subprocess."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
def reference(recipe, tmp_path_factory) -> Run:
    return fit(load_config(recipe), out=tmp_path_factory.mktemp("ref") / "run")


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


def _train_in_child(recipe: Path, out: Path, moment: str) -> None:
    os.environ[KILL_AT_ENV] = moment
    fit(load_config(recipe), out=out)


def killed_run(recipe: Path, out: Path, moment: str, cli: bool) -> int:
    """Train until the kill at `moment`; returns the exit status (the signal, negated). `cli`: as
    `nnlab run` in a new interpreter; else in a forked copy of this one (no start-up cost)."""
    if cli:
        env = os.environ | {KILL_AT_ENV: moment}
        return subprocess.run([sys.executable, "-m", "nnlab", "run", str(recipe), "--out", str(out)], env=env,
                              capture_output=True, text=True, timeout=600).returncode
    child = multiprocessing.get_context("fork").Process(target=_train_in_child, args=(recipe, out, moment))
    child.start()
    child.join(600)
    return child.exitcode


@pytest.mark.parametrize(("point", "occurrence"), MOMENTS, ids=[f"{p}-{n}" for p, n in MOMENTS])
def test_kill_then_resume_equals_uninterrupted(recipe, reference, tmp_path, point, occurrence):
    out = tmp_path / "run"
    # the moment (last.pt replaced, history not yet appended) through the real command line
    status = killed_run(recipe, out, f"{point}:{occurrence}", cli=(point, occurrence) == ("checkpoint-saved", 2))
    assert status == -signal.SIGKILL
    resumed = fit(Run.open(out).config, resume_run=Run.open(out))
    a = torch.load(reference.checkpoints / "last.pt", weights_only=True)
    b = torch.load(resumed.checkpoints / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert same(a["model"], b["model"]) and same(a["optimizer"], b["optimizer"])
    assert same(a["best"], b["best"]) and same(a["scheduler"], b["scheduler"])
    assert history(resumed) == history(reference)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    assert sorted(p.name for p in resumed.checkpoints.iterdir()) == \
        sorted(p.name for p in reference.checkpoints.iterdir())
    assert not list(out.rglob("*.tmp"))
