"""Callbacks (`training/callbacks.py`): the order and arguments of the calls in both engines, stopping by
return value or by StopTraining (the run then finishes as an early-stopped one), resume taking them, and
early stopping itself being one of them."""

from __future__ import annotations

import json

import pytest

import nnlab
from nnlab.training.callbacks import Callback, Callbacks, EarlyStopping

TINY = {"name": "cb", "seed": 0, "data": {"kind": "digits", "image_size": 8, "batch_size": 256},
        "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 4}}


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None, raise_stop: bool = False) -> None:
        self.calls, self.stop_at, self.raise_stop = [], stop_at, raise_stop

    def on_fit_start(self, run):
        self.calls.append(("start", run.path.name))

    def on_step_end(self, step, loss):
        self.calls.append(("step", step, float(loss)))

    def on_epoch_end(self, row):
        self.calls.append(("epoch", row["epoch"], row["val_accuracy"]))
        if row["epoch"] == self.stop_at:
            if self.raise_stop:
                raise nnlab.StopTraining
            return True
        return None

    def on_fit_end(self, run, metrics):
        self.calls.append(("end", metrics["epochs"], metrics["stopped_early"]))


def kinds(calls):
    return [c[0] for c in calls]


def test_torch_engine_calls_in_order_and_a_callback_stops_it(tmp_path):
    rec = Recorder(stop_at=2)
    run = nnlab.fit(TINY, out=tmp_path / "run", echo=False, callbacks=[rec])
    steps = -(-run.metrics["data"]["sizes"]["train"] // 256)  # batches of 256 in the training split
    assert kinds(rec.calls) == ["start", *["step"] * steps, "epoch", *["step"] * steps, "epoch", "end"]
    assert [c[1] for c in rec.calls if c[0] == "step"] == list(range(2 * steps))  # counted over the run
    history = run.history
    assert [c[1:] for c in rec.calls if c[0] == "epoch"] == [(r["epoch"], r["val_accuracy"]) for r in history]
    assert rec.calls[-1] == ("end", 2, True) and run.metrics["stopped_early"] is True
    assert json.loads((run.path / "metrics.json").read_text())["epochs"] == 2

    again = Recorder()
    nnlab.resume(run, epochs=3, echo=False, callbacks=[again])  # resume takes callbacks too
    assert kinds(again.calls)[0] == "start" and again.calls[-1] == ("end", 3, False)


def test_numpy_engine_calls_all_but_on_step_end_and_stop_training_stops_it(tmp_path):
    rec = Recorder(stop_at=1, raise_stop=True)
    run = nnlab.fit(TINY | {"engine": "numpy"}, out=tmp_path / "run", echo=False, callbacks=[rec])
    assert kinds(rec.calls) == ["start", "epoch", "end"]
    assert rec.calls[-1] == ("end", 1, True) and len(run.history) == 1


def test_early_stopping_is_a_callback_and_callbacks_must_be_callbacks():
    from nnlab.config import validate
    from nnlab.training.epochs import best_tracker

    cfg = validate(TINY | {"train": {"epochs": 9, "early_stop_patience": 2}}, "t")
    best = best_tracker(cfg)
    hooks = Callbacks([EarlyStopping(cfg, best)])
    best.stale = 1
    assert not hooks.epoch_end({"epoch": 1})
    best.stale = 2
    assert hooks.epoch_end({"epoch": 2})
    with pytest.raises(nnlab.NnlabError, match="not an nnlab.Callback"):
        Callbacks([lambda row: True])


def test_an_object_with_hook_methods_is_taken_without_subclassing():
    class Tracker:  # e.g. an experiment tracker with its own base class
        def __init__(self):
            self.rows, self.ended = [], None

        def on_epoch_end(self, row):
            self.rows.append(row["epoch"])

        def on_fit_end(self, run, metrics):
            self.ended = metrics

    tracker = Tracker()
    hooks = Callbacks([tracker])
    hooks.fit_start(None)
    hooks.step_end(0, 1.0)
    assert not hooks.epoch_end({"epoch": 1})
    hooks.fit_end(None, {"epochs": 1})
    assert tracker.rows == [1] and tracker.ended == {"epochs": 1}
