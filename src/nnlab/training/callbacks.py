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


HOOKS = ("on_fit_start", "on_step_end", "on_epoch_end", "on_fit_end")


def _hook(cb: Any, name: str):
    """`cb`'s own method `name`, or None where it has none or only Callback's default (nothing to call)."""
    method = getattr(type(cb), name, None)
    return getattr(cb, name) if callable(method) and method is not getattr(Callback, name) else None


class Callbacks:
    """The loop's one list of callbacks, called in order; `epoch_end` says whether any asked to stop.
    An object with some of the hook methods but not subclassing `Callback` (a tracker) is taken as well."""

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.items = list(callbacks)
        for cb in self.items:
            if not isinstance(cb, Callback) and not any(callable(getattr(cb, h, None)) for h in HOOKS):
                raise NnlabError(f"callbacks: {cb!r} is not an nnlab.Callback (subclass it and override "
                                 "on_epoch_end, on_step_end, on_fit_start or on_fit_end)")
        # per hook, only the callbacks that define it: on_step_end runs on the loop's hot path
        self.hooks = {h: [m for m in (_hook(cb, h) for cb in self.items) if m is not None] for h in HOOKS}

    def fit_start(self, run: Run) -> None:
        for hook in self.hooks["on_fit_start"]:
            hook(run)

    def step_end(self, step: int, loss: Any) -> None:
        for hook in self.hooks["on_step_end"]:
            hook(step, loss)

    def epoch_end(self, row: dict[str, Any]) -> bool:
        """Every callback sees the row; True when one returned True or raised StopTraining (on any rank)."""
        stop = False
        for hook in self.hooks["on_epoch_end"]:
            try:
                stop = bool(hook(row)) or stop
            except StopTraining:
                stop = True
        if dist.is_initialized():
            on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([float(stop)], device=on)
            dist.all_reduce(flag)
            stop = bool(flag.item())
        return stop

    def fit_end(self, run: Run, metrics: dict[str, Any]) -> None:
        for hook in self.hooks["on_fit_end"]:
            hook(run, metrics)

    def close(self) -> None:
        """An interrupted session: callbacks holding files (TensorBoard's writer) close them."""
        for cb in self.items:
            if callable(getattr(cb, "close", None)):
                cb.close()
