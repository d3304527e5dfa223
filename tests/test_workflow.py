"""Working the way users work: the Python API, the per-epoch lines, TensorBoard, the LR finder, and the
newcomer's paper cuts (on scikit-learn's digits, through the real entry points)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import nnlab
from nnlab.config import validate
from nnlab.errors import ConfigError, ModelError, NnlabError

CONFIG = """
name = "wf"
seed = 1
[data]
kind = "digits"
image_size = 16
batch_size = 64
[model]
name = "lenet_alpha"
[optim]
lr = 0.003
[schedule]
name = "cosine"
[train]
epochs = 2
keep_best = 2
tensorboard = true
tensorboard_every = 5
"""
LINE = re.compile(r"^epoch (\d+)/(\d+)  train_loss (\d+\.\d{4})  val_accuracy (\d\.\d{4})  lr \S+  [\d,]+ img/s  "
                  r"\d+\.\d s  ETA \S+( s)?$")


def nnlab_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2-epoch run through `nnlab run`, stdout a pipe (not a terminal), TensorBoard on."""
    root = tmp_path_factory.mktemp("wf")
    (root / "wf.toml").write_text(CONFIG)
    proc = nnlab_cli("run", root / "wf.toml", "--out", root / "run")
    return root / "run", proc


def test_per_epoch_lines_on_a_pipe_and_in_train_log(cli_run):
    run, proc = cli_run
    printed = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(printed) == 2 and all(LINE.match(line) for line in printed), proc.stdout
    assert (run / "train.log").read_text().splitlines() == printed
    with (run / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    for line, row in zip(printed, history, strict=True):  # the line shows the history row's numbers
        m = LINE.match(line)
        assert int(m[1]) == int(row["epoch"]) and m[2] == "2"
        assert float(m[3]) == pytest.approx(float(row["train_loss"]), abs=1e-4)
        assert float(m[4]) == pytest.approx(float(row["val_accuracy"]), abs=1e-4)
    assert "\r" not in proc.stdout + proc.stderr  # no tqdm bar redraws off a terminal


def test_tensorboard_events_read_back(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = cli_run
    with (run / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    val = [e.value for e in events.Scalars("val/accuracy")]
    assert val == pytest.approx([float(r["val_accuracy"]) for r in history], abs=1e-6)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    steps = [e.step for e in events.Scalars("step/train_loss")]
    assert steps and all(s % 5 == 0 for s in steps)
    assert {"plots/history", "plots/confusion"} <= set(tags["images"])
    hparams = EventAccumulator(str(run / "tensorboard"))  # add_hparams writes the final metrics as scalars
    hparams.Reload()
    metrics = json.loads((run / "metrics.json").read_text())
    assert hparams.Scalars("hparam/test_accuracy")[0].value == pytest.approx(metrics["test"]["accuracy"])


def test_checkpoint_names_count_epochs_from_1(cli_run):
    run, _ = cli_run
    names = sorted(p.name for p in (run / "checkpoints").glob("best-*.pt"))
    epochs = sorted(int(re.match(r"best-e(\d+)-", n)[1]) for n in names)
    assert epochs == [1, 2]  # keep_best = 2 of 2 epochs
    with (run / "history.csv").open() as fh:
        acc = {int(r["epoch"]): float(r["val_accuracy"]) for r in csv.DictReader(fh)}
    for n in names:
        e = int(re.match(r"best-e(\d+)-", n)[1])
        assert f"accuracy-{acc[e]:.4f}" in n


def test_python_api_load_predict_evaluate_plot(cli_run):
    path, _ = cli_run
    run = nnlab.load_run(path)
    metrics = json.loads((path / "metrics.json").read_text())
    assert run.metrics == metrics and run.config.train.epochs == 2
    assert [r["epoch"] for r in run.history] == [1, 2]
    frame = run.history_frame()
    assert list(frame.index) == [1, 2] and frame["val_accuracy"].tolist() == [r["val_accuracy"] for r in run.history]
    # predict the test split's images as the CLI does, and compare with predictions/test.csv
    with (path / "predictions" / "test.csv").open() as fh:
        saved = list(csv.DictReader(fh))
    digits = load_digits()
    ids = [int(r["id"]) for r in saved[:20]]
    images = (digits.images[ids] * (255 / 16)).round().astype(np.uint8)
    pred = run.predict(images)
    assert pred.labels == [r["top1"] for r in saved[:20]]
    p_saved = np.array([[float(r[f"p_{c}"]) for c in run.classes] for r in saved[:20]])
    np.testing.assert_allclose(pred.probs, p_saved, atol=1e-4)
    assert pred.top(2)[0][0] == (pred.labels[0], pytest.approx(float(pred.probs[0].max())))
    assert run.evaluate("test")["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    fig = run.plot_history()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    conf = run.plot_confusion()
    assert conf.axes[0].get_title().startswith("test confusion")
    matrix = conf.axes[0].images[0].get_array()
    assert matrix.shape == (10, 10) and np.allclose(np.asarray(matrix).sum(1), 1, atol=1e-6)


def test_resume_extends_a_finished_run_and_replans_the_schedule(cli_run, tmp_path):
    src, _ = cli_run
    copy = tmp_path / "run"
    shutil.copytree(src, copy)
    before = [r["lr"] for r in nnlab.load_run(copy).history]
    proc = nnlab_cli("resume", copy, "--epochs", "4")
    run = nnlab.load_run(copy)
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4] and run.config.train.epochs == 4
    assert "epochs = 4" in (copy / "config.toml").read_text()
    assert [r["lr"] for r in run.history][:2] == before
    # cosine re-planned over 4 epochs: 3/4 of the way at the end of epoch 3 (the old plan had ended at 0)
    assert before[1] == pytest.approx(0, abs=1e-9)
    assert run.history[2]["lr"] == pytest.approx(0.003 * 0.5 * (1 + np.cos(0.75 * np.pi)), rel=1e-6)
    assert run.metrics["epochs"] == 4 and "epoch 3/4" in proc.stdout


def test_a_run_failing_before_its_first_epoch_leaves_no_directory(tmp_path):
    cfg = tmp_path / "bad.toml"
    for override, message in (("model.name=lenet_alfa", "did you mean 'lenet_alpha'"),
                              ("data.kind=npzz", "did you mean 'npz'"),
                              ("data.kind=npz", "data.path")):
        cfg.write_text(CONFIG)
        out = tmp_path / "run"
        proc = nnlab_cli("run", cfg, "--out", out, "--set", override, ok=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert message in proc.stderr and str(cfg) in proc.stderr, proc.stderr
        assert not out.exists()


def test_relative_missing_path_says_where_it_was_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = validate({"data": {"kind": "npz", "path": "nowhere/x.npz"}, "train": {"epochs": 1}})
    with pytest.raises(NnlabError, match=r"nowhere/x\.npz.*resolved against the current directory " +
                       re.escape(str(tmp_path))):
        nnlab.fit(cfg, out=tmp_path / "run", echo=False)
    assert not (tmp_path / "run").exists()


def test_epochs_as_a_string_is_rejected_and_amp_on_cpu_says_so(tmp_path, capsys):
    with pytest.raises(ConfigError, match="train.epochs"):
        validate({"train": {"epochs": "15"}})
    cfg = validate({"name": "amp", "data": {"kind": "digits", "image_size": 8, "batch_size": 256},
                    "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1, "amp": "bf16"}})
    nnlab.fit(cfg, out=tmp_path / "run")
    out = capsys.readouterr().out
    assert "train.amp = 'bf16' applies on CUDA only" in out
    assert "epoch 1/1" in out


def test_plurals():
    from nnlab.progress import format_seconds, plural

    assert [plural(1, "epoch"), plural(2, "epoch"), plural(1500, "cell")] == ["1 epoch", "2 epochs", "1,500 cells"]
    assert [format_seconds(5), format_seconds(187), format_seconds(3723)] == ["5 s", "3:07", "1:02:03"]


def test_unknown_model_did_you_mean():
    from nnlab.models import build_model

    with pytest.raises(ModelError, match="did you mean 'lenet_gamma'"):
        build_model(validate({"model": {"name": "lenet_gama"}}).model, 1, 10, 28)


def test_lr_find_on_digits_suggests_a_rate_that_trains(tmp_path):
    base = {"name": "lrf", "seed": 0, "data": {"kind": "digits", "image_size": 16, "batch_size": 32},
            "model": {"name": "lenet_alpha"}, "optim": {"name": "sgd", "momentum": 0.9}, "train": {"epochs": 2}}
    proc = nnlab_cli("lr-find", _write(tmp_path / "lrf.toml", base), "--out", tmp_path / "lrf", "--steps", "100",
                     "--start-lr", "1e-6", "--end-lr", "10")
    data = json.loads((tmp_path / "lrf" / "lr_find.json").read_text())
    assert (tmp_path / "lrf" / "lr_find.png").stat().st_size > 10_000
    assert sorted(tmp_path.joinpath("lrf").iterdir()) == [tmp_path / "lrf" / "lr_find.json",
                                                           tmp_path / "lrf" / "lr_find.png"]
    lrs = data["lrs"]
    assert lrs[0] == pytest.approx(1e-6) and np.all(np.diff(lrs) > 0)
    assert data["diverged"], "SGD with momentum ramped to lr 10 must blow the loss up and stop early"
    assert len(lrs) < 100 and lrs[-1] < 10
    for key in ("steepest", "valley"):
        assert lrs[0] < data[key] < lrs[-1]
    assert f"--set optim.lr={data['suggestion']:.3g}" in proc.stdout
    # training at the suggestion learns: loss falls from ln(10) and stays finite
    run = nnlab.fit(base, {"optim.lr": data["suggestion"]}, out=tmp_path / "run", echo=False)
    losses = [r["train_loss"] for r in run.history]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * np.log(10)
    assert run.metrics["test"]["accuracy"] > 0.5


def _write(path: Path, raw: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    return path
