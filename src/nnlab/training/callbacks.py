"""Callbacks: hooks into a training run, for what a user adds around the loop (a tracker, a custom
stopping rule, a notification) without editing it. Early stopping and TensorBoard use the same
interface, so the loop calls one list of callbacks and nothing else.

    class Patience(nnlab.Callback):
        def on_epoch_end(self, row):
            return row["val_accuracy"] > 0.99      # True (or raise nnlab.StopTraining) ends the run here

    nnlab.fit(config, callbacks=[Patience()])

The order of calls: `on_fit_start(run)` once the run directory exists (the data and model are built next);
`on_step_end(step, loss)` after every optimiser step of the torch engine (`step` counts batches from 0 over
the whole run, `loss` is the batch's loss as a 0-d tensor: `float(loss)` waits for the GPU, so read it
sparingly); `on_epoch_end(row)` with the history row just written (epoch from 1, lr, train_loss, every
`val_*` metric, img/s); `on_fit_end(run, metrics)` with metrics.json's content once the run has finished
(not when it was interrupted or failed). The NumPy engine calls all of them but `on_step_end`. In a DDP run
every process calls them; a stop asked by any process stops all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from nnlab.config import ExperimentConfig
from nnlab.errors import NnlabError
from nnlab.runs.run import BestCheckpoints, Run
from nnlab.training.epochs import stop_early


class StopTraining(Exception):  # noqa: N818  (named like Keras' and Lightning's stop signal, not an error)
    """Raised by `Callback.on_epoch_end` to end training after this epoch (the same as returning True):
    the run then finishes as an early-stopped run (best checkpoint evaluated, metrics.json written)."""


class Callback:
    """A hook into training; override the methods you need (each default does nothing)."""

    def on_fit_start(self, run: Run) -> None:
        """Once, when the run directory exists (`run.path`, `run.config`), before the first epoch."""

    def on_step_end(self, step: int, loss: Any) -> None:
        """After each training batch (torch engine): `step` counts from 0 over the run, `loss` a 0-d tensor."""

    def on_epoch_end(self, row: dict[str, Any]) -> bool | None:
        """After each epoch with its history row; return True (or raise `StopTraining`) to stop here."""
        return None

    def on_fit_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Once the run has finished, with metrics.json's content."""


class EarlyStopping(Callback):
    """`train.early_stop_patience`: stop when that many epochs went by without the main metric improving
    (the count is the best-k tracker's, saved in last.pt, so a resumed run counts on)."""

    def __init__(self, cfg: ExperimentConfig, best: BestCheckpoints) -> None:
        self.cfg, self.best = cfg, best

    def on_epoch_end(self, row: dict[str, Any]) -> bool:
        return stop_early(self.cfg, self.best)


class Callbacks:
    """The loop's one list of callbacks, called in order; `epoch_end` says whether any asked to stop."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.items = list(callbacks)
        for cb in self.items:
            if not isinstance(cb, Callback):
                raise NnlabError(f"callbacks: {cb!r} is not an nnlab.Callback (subclass it and override "
                                 "on_epoch_end, on_step_end, on_fit_start or on_fit_end)")
        # only the callbacks that override on_step_end are called per step (the loop's hot path)
        self.stepping = [cb for cb in self.items if type(cb).on_step_end is not Callback.on_step_end]

    def fit_start(self, run: Run) -> None:
        for cb in self.items:
            cb.on_fit_start(run)

    def step_end(self, step: int, loss: Any) -> None:
        for cb in self.stepping:
            cb.on_step_end(step, loss)

    def epoch_end(self, row: dict[str, Any]) -> bool:
        """Every callback sees the row; True when one returned True or raised StopTraining (on any rank)."""
        stop = False
        for cb in self.items:
            try:
                stop = bool(cb.on_epoch_end(row)) or stop
            except StopTraining:
                stop = True
        if dist.is_initialized():
            on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([float(stop)], device=on)
            dist.all_reduce(flag)
            stop = bool(flag.item())
        return stop

    def fit_end(self, run: Run, metrics: dict[str, Any]) -> None:
        for cb in self.items:
            cb.on_fit_end(run, metrics)

    def close(self) -> None:
        """An interrupted session: callbacks holding files (TensorBoard's writer) close them."""
        for cb in self.items:
            if hasattr(cb, "close"):
                cb.close()
