"""Model EMA (`train.ema_decay`): the update formula, what is evaluated and checkpointed, exact resume,
and prediction with the EMA weights."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from nnlab.config import validate
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained
from nnlab.training import fit
from nnlab.training.ema import make_ema, update_ema


def digits_cfg(**train):
    return validate({"name": "ema", "seed": 3, "data": {"kind": "digits", "image_size": 8, "batch_size": 64},
                     "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
                     "schedule": {"name": "cosine", "warmup_epochs": 0.5},
                     "train": {"epochs": 3, "ema_decay": 0.9, "threads": 1} | train})


def test_update_is_the_exponential_moving_average_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = make_ema(digits_cfg(), model)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(8, 4))  # moves the BatchNorm running statistics too
    update_ema(ema, model)
    for key, value in model.state_dict().items():
        got = ema.module.state_dict()[key]
        if value.is_floating_point():
            assert torch.allclose(got, 0.9 * before[key] + 0.1 * value, atol=1e-6), key
        else:
            assert torch.equal(got, value), key  # counters are copied


def test_warmed_up_decay_copies_first_then_follows_timms_schedule():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ema = make_ema(digits_cfg(ema_decay=0.999), model)
    assert ema.use_warmup  # train.ema_warmup is on by default
    with torch.no_grad():
        model.weight.add_(1.0)
    update_ema(ema, model, 1)  # the first optimiser step: the EMA becomes the weights, the init is gone
    assert torch.equal(ema.module.weight, model.weight)
    for step in (2, 50, 100_000):
        before = ema.module.weight.clone()
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        update_ema(ema, model, step)
        decay = min(1 - (1 + (step - 1)) ** (-2 / 3), 0.999)  # reaches the cap after ~31k steps
        assert torch.allclose(ema.module.weight, decay * before + (1 - decay) * model.weight, atol=1e-6), step
    fixed = make_ema(digits_cfg(ema_decay=0.999, ema_warmup=False), model)
    start = fixed.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    update_ema(fixed, model, 1)  # without warm-up the step is ignored: decay 0.999 from the start
    assert torch.allclose(fixed.module.weight, 0.999 * start + 0.001 * model.weight, atol=1e-6)


def test_no_ema_unless_asked():
    assert make_ema(digits_cfg(ema_decay=None), nn.Linear(2, 2)) is None


def test_ema_weights_are_checkpointed_evaluated_and_predicted_with(tmp_path):
    run = fit(digits_cfg(), out=tmp_path / "run")
    last = torch.load(run.checkpoints / "last.pt", weights_only=True)
    assert set(last["ema"]) == set(last["model"])
    assert any(not torch.equal(last["ema"][k], last["model"][k]) for k in last["model"])
    best = torch.load(run.best_checkpoint(), weights_only=True)
    model = load_trained(run)
    assert all(torch.equal(model.state_dict()[k], best["ema"][k]) for k in best["ema"])
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5  # chance is 0.1
    # the val metric recorded for the best epoch is the EMA model's
    meta = json.loads(next(run.checkpoints.glob("best-*.json")).read_text())
    history = {int(r["epoch"]): r for r in run.history()}
    assert np.isclose(history[meta["epoch"] + 1]["val_accuracy"], meta["value"])
    assert np.isclose(metrics["val"]["accuracy"], meta["value"])


def test_resume_with_ema_is_bit_exact(tmp_path):
    full = fit(digits_cfg(), out=tmp_path / "full")
    part = fit(digits_cfg(), out=tmp_path / "part", stop_after_epoch=1)
    resumed = fit(part.config, resume_run=Run.open(part.path))
    a = torch.load(full.checkpoints / "last.pt", weights_only=True)
    b = torch.load(resumed.checkpoints / "last.pt", weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert [r["val_accuracy"] for r in full.history()] == [r["val_accuracy"] for r in resumed.history()]
