"""One learning-rate schedule for both engines: the formulas (against torch's schedulers), and one TOML
trained by the torch and the NumPy engine writing the same lr column."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nnlab.config import load_config, validate
from nnlab.runs.run import Run
from nnlab.training import fit
from nnlab.training.optim import apply_schedule, build_optimizer
from nnlab.training.schedule import Plateau, Schedule

ROOT = Path(__file__).resolve().parents[1]


def plan(schedule: dict, epochs: int = 4, steps: int = 5, lr: float = 0.1, optim: str = "sgd",
         main_metric: str = "accuracy") -> Schedule:
    cfg = validate({"optim": {"name": optim, "lr": lr}, "schedule": schedule, "train": {"epochs": epochs},
                    "eval": {"main_metric": main_metric}})
    return Schedule(cfg, steps)


def test_cosine_warms_up_linearly_then_decays_to_its_floor():
    s = plan({"name": "cosine", "warmup_epochs": 1, "min_lr": 0.01})
    assert [s.lr(k) for k in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    after = [s.lr(k) for k in range(5, 21)]
    assert all(a > b for a, b in zip(after, after[1:]))
    assert s.lr(5) == pytest.approx(0.1) and s.lr(20) == pytest.approx(0.01)  # the floor after the last step
    no_warmup = plan({"name": "cosine", "min_lr": 0.01})
    assert no_warmup.lr(0) == 0.1 and no_warmup.lr(10) == pytest.approx((0.1 + 0.01) / 2)  # half way


def test_fractional_warmup_counts_optimiser_steps():
    s = plan({"name": "cosine", "warmup_epochs": 0.5}, steps=10)
    assert [s.lr(k) for k in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert s.lr(5) == pytest.approx(0.1)


def test_step_decays_every_step_size_epochs():
    s = plan({"name": "step", "step_size": 2, "gamma": 0.5}, epochs=6)
    per_epoch = [s.lr(e * 5) for e in range(6)]
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert {s.lr(k) for k in range(10, 20)} == {s.lr(10)}  # constant within the epochs of one decay


def test_step_equals_torchs_step_lr():
    s = plan({"name": "step", "step_size": 2, "gamma": 0.1}, epochs=12, lr=0.3)
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.3)
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    for epoch in range(12):
        assert s.lr(epoch * 5) == s.lr(epoch * 5 + 4) == opt.param_groups[0]["lr"], epoch
        opt.step()
        ref.step()


def test_plateau_decays_after_patience_epochs_without_gain():
    s = plan({"name": "plateau", "patience": 1, "factor": 0.5})
    for value, expected in [(0.5, 0.1), (0.5, 0.1), (0.5, 0.05), (0.6, 0.05), (0.6, 0.05), (0.6, 0.025)]:
        s.end_epoch(value)
        assert s.lr(0) == pytest.approx(expected)
    s.end_epoch(None)  # no val split: no judgement
    assert s.lr(0) == pytest.approx(0.025) and s.plateau.bad_epochs == 0


def test_plateau_state_survives_json_and_reads_torchs():
    s = plan({"name": "plateau", "patience": 3}, main_metric="loss")
    fresh = plan({"name": "plateau", "patience": 3}, main_metric="loss")
    fresh.load_state_dict(json.loads(json.dumps(fresh.state_dict())))  # best = inf has no JSON form
    assert fresh.plateau.best == math.inf
    s.end_epoch(0.7)
    s.end_epoch(0.8)
    restored = plan({"name": "plateau", "patience": 3}, main_metric="loss")
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert vars(restored.plateau) == vars(s.plateau)
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    old = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", patience=3)
    old.step(0.7)
    old.step(0.8)
    from_torch = plan({"name": "plateau", "patience": 3}, main_metric="loss")
    from_torch.load_state_dict(old.state_dict())  # last.pt of an earlier version
    assert (from_torch.plateau.lr, from_torch.plateau.best, from_torch.plateau.bad_epochs) == (0.1, 0.7, 1)


def test_plateau_equals_torchs_reduce_on_plateau():
    values = [0.9, 0.8, 0.80001, 0.85, 0.7, 0.7, 0.69, 0.7, 0.7, 0.7, 0.6]
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.3)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.3, patience=1)
    ours = Plateau(0.3, higher_is_better=False, factor=0.3, patience=1)
    for v in values:
        ref.step(v)
        ours.update(v)
        assert ours.lr == opt.param_groups[0]["lr"]


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_onecycle_equals_torchs_onecycle_lr_and_momentum(optim):
    s = plan({"name": "onecycle"}, epochs=3, steps=7, lr=0.05, optim=optim)
    cfg = validate({"optim": {"name": optim, "lr": 0.05}, "schedule": {"name": "onecycle"}, "train": {"epochs": 3}})
    ref_opt = build_optimizer(cfg, torch.nn.Linear(2, 2))
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.05, total_steps=21)
    ours_opt = build_optimizer(cfg, torch.nn.Linear(2, 2))
    key = "betas" if optim == "adam" else "momentum"
    for step in range(21):
        apply_schedule(ours_opt, s, step)
        assert ours_opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"], step
        assert ours_opt.param_groups[0][key] == ref_opt.param_groups[0][key], step
        ref_opt.step()
        ref.step()


def digits_config(shared_data: Path, engine: str, schedule: list[str]):
    data = shared_data / "digits/uci-optdigits"
    return load_config(ROOT / "recipes" / "digits-mlp-numpy.toml", [
        f"data.path={json.dumps(str(data / 'optdigits.tra'))}",
        f"data.test_path={json.dumps(str(data / 'optdigits.tes'))}",
        f"engine={json.dumps(engine)}", "train.epochs=3", "model.hidden=[16]", "train.threads=1", *schedule])


@pytest.mark.parametrize("schedule", [
    ["schedule.name=\"cosine\"", "schedule.warmup_epochs=0.5"],
    ["schedule.name=\"step\"", "schedule.step_size=1", "schedule.gamma=0.5"],
    ["schedule.name=\"onecycle\""],
], ids=["cosine-warmup", "step", "onecycle"])
def test_one_toml_gives_the_same_lr_column_in_both_engines(shared_data, tmp_path, schedule):
    runs = {engine: fit(digits_config(shared_data, engine, schedule), out=tmp_path / engine, echo=False)
            for engine in ("numpy", "torch")}
    lrs = {engine: [row["lr"] for row in run.history()] for engine, run in runs.items()}
    assert lrs["numpy"] == lrs["torch"]
    # by hand: the rate after each epoch's last optimiser step, i.e. the next step's
    train = runs["numpy"].read_json("metrics.json")["data"]["sizes"]["train"]
    steps = math.ceil(train / 64)
    assert train % 64 != 1  # the NumPy engine would skip a last batch of one sample
    if "cosine" in schedule[0]:
        warmup = steps // 2
        expected = [0.001 * 0.5 * (1 + math.cos(math.pi * ((e + 1) * steps - warmup) / (3 * steps - warmup)))
                    for e in range(3)]
        assert expected[-1] == 0.0
    elif "step" in schedule[0]:
        expected = [0.001 * 0.5, 0.001 * 0.25, 0.001 * 0.125]
    else:  # the second phase of OneCycle: from the peak (after 30% of the steps) down to peak / 25 / 1e4
        rise = 0.3 * 3 * steps - 1
        expected = [0.001 / 25e4 + (0.001 - 0.001 / 25e4) / 2 * (1 + math.cos(math.pi * ((e + 1) * steps - rise)
                                                                            / (3 * steps - 1 - rise)))
                    for e in range(3)]
    assert lrs["numpy"] == pytest.approx(expected, rel=1e-9)


def tiny_digits(engine: str, epochs: int = 3, **schedule) -> dict:
    """sklearn's 8x8 digits, a 16-unit MLP and so low a rate that the val accuracy stays where it starts."""
    return validate({"name": "plateau", "seed": 2, "engine": engine,
                     "data": {"kind": "digits", "image_size": 8, "batch_size": 64, "mean": 0.0, "std": 1.0},
                     "model": {"name": "mlp", "hidden": [16]}, "optim": {"name": "adam", "lr": 1e-6},
                     "schedule": {"name": "plateau", "factor": 0.5} | schedule,
                     "train": {"epochs": epochs, "threads": 1}})


def replayed(run) -> list[float]:
    """The plateau's rates from the run's own val metric, epoch by epoch."""
    cfg = run.config
    plateau = Plateau(cfg.optim.lr, True, cfg.schedule.factor, cfg.schedule.patience)
    out = []
    for row in run.history():
        plateau.update(row[f"val_{cfg.eval.main_metric}"])
        out.append(plateau.lr)
    return out


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_plateau_follows_the_val_metric_in_both_engines(tmp_path, engine):
    run = fit(tiny_digits(engine, patience=0), out=tmp_path / "run", echo=False)
    lrs = [row["lr"] for row in run.history()]
    assert lrs == replayed(run)
    assert lrs[-1] < 1e-6  # it did decay


def test_numpy_resume_keeps_the_plateau_count(tmp_path, monkeypatch):
    import nnlab.training.numpy_engine as engine

    full = fit(tiny_digits("numpy", epochs=4, patience=1), out=tmp_path / "full", echo=False)
    real, calls = engine.fit_epoch, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "fit_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_digits("numpy", epochs=4, patience=1), out=tmp_path / "part", echo=False)
    monkeypatch.setattr(engine, "fit_epoch", real)
    part = Run.open(tmp_path / "part")
    fit(part.config, resume_run=part, echo=False)
    assert len(part.history()) == 4
    assert [row["lr"] for row in part.history()] == [row["lr"] for row in full.history()] == replayed(full)
    # epoch 3 brought no gain and epoch 4, after the resume, a second: the rate is cut only if the count
    # of epochs without gain came back with last.npz (a fresh plateau would take epoch 4 as its best)
    assert [row["lr"] for row in full.history()] == [1e-6, 1e-6, 1e-6, 5e-7]
