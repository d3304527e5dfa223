"""The training loop on real data (scikit-learn's digits): checkpoints, resume, NaN guard, freezing."""

from __future__ import annotations

import json

import pytest
import torch

import nnlab.training.loop as train_mod
from nnlab.config import validate
from nnlab.errors import TrainingError
from nnlab.models import build_model, count_parameters
from nnlab.runs.run import Run
from nnlab.training import fit
from nnlab.training.optim import freeze_layers


def digits_cfg(**train):
    return validate({"name": "t", "seed": 3, "data": {"kind": "digits", "image_size": 16, "batch_size": 64},
                     "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
                     "schedule": {"name": "cosine", "warmup_epochs": 0.5},
                     "train": {"epochs": 3, "keep_best": 2} | train})


def weights(run: Run) -> dict[str, torch.Tensor]:
    return torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]


def test_run_directory_contents_and_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_PLOTS", "1")
    run = fit(digits_cfg(epochs=4), out=tmp_path / "run")
    for name in ("config.toml", "env.json", "history.csv", "metrics.json", "classes.txt", "splits.json",
                 "checkpoints/last.pt", "plots/history.png", "plots/confusion.png", "predictions/test.csv"):
        assert (run.path / name).exists(), name
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.85
    assert metrics["params"] == count_parameters(build_model(run.config.model, 1, 10, 16))
    assert [r["epoch"] for r in run.history()] == [1, 2, 3, 4]
    best = sorted(p.name for p in run.checkpoints.glob("best-*.pt"))
    assert 1 <= len(best) <= 2 and all("accuracy" in b for b in best)
    env = json.loads((run.path / "env.json").read_text())
    assert env["seed"] == 3 and env["device"] == "cpu" and "torch" in env


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = fit(digits_cfg(), out=tmp_path / "full")
    part = fit(digits_cfg(), out=tmp_path / "part", stop_after_epoch=1)
    assert not (part.path / "metrics.json").exists()
    assert len(part.history()) == 1
    resumed = fit(part.config, resume_run=Run.open(part.path))
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in full.history()] == [r["train_loss"] for r in resumed.history()]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_mod.forward_loss
    calls = {"n": 0}

    def poisoned(model, x, y, criterion, *rest):  # rest: the distillation teachers and their inputs
        calls["n"] += 1
        logits, loss = real(model, x, y, criterion, *rest)
        return logits, loss * float("nan") if calls["n"] == 30 else loss  # in epoch 2 (21 steps/epoch)

    monkeypatch.setattr(train_mod, "forward_loss", poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2"):
        fit(digits_cfg(), out=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_early_stopping(tmp_path):
    cfg = digits_cfg(epochs=30, early_stop_patience=1)
    cfg.optim.lr = 1e-9  # nothing improves after the first epoch
    run = fit(cfg, out=tmp_path / "run")
    assert len(run.history()) == 2
    assert json.loads((run.path / "metrics.json").read_text())["stopped_early"] is True


def test_freeze_first_and_train_last():
    model = build_model(digits_cfg().model, 1, 10, 28)
    freeze_layers(model, freeze_first=2)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    model = build_model(digits_cfg().model, 1, 10, 28)
    freeze_layers(model, train_last=1)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.5.weight", "classifier.5.bias"]


def test_gradient_accumulation_and_clipping_run(tmp_path):
    run = fit(digits_cfg(epochs=1, grad_accum=2, clip_grad_norm=1.0), out=tmp_path / "run")
    assert json.loads((run.path / "metrics.json").read_text())["test"]["accuracy"] > 0.3


def test_steps_per_epoch_beyond_a_finite_loader_passes_over_it_again(tmp_path):
    # digits: ~1,100 training images in batches of 64 is 18 batches; before: StopIteration at step 18
    cfg = digits_cfg(epochs=1, steps_per_epoch=30)
    run = fit(cfg, out=tmp_path / "run", echo=False)
    row = run.history()[0]
    assert row["epoch"] == 1 and row["train_loss"] == row["train_loss"]  # trained, not NaN
    assert json.loads((run.path / "metrics.json").read_text())["val"]["accuracy"] > 0.3
