"""What both engines take from `[optim]` and `[schedule]`: the optimiser's keyword arguments, and the
learning rate (and OneCycle's momentum) of every optimiser step. Torch-free, so the NumPy engine uses
the very formulas the torch loop uses, and one TOML is one experiment in either engine.

Each engine counts its optimiser steps over the whole run (step = epoch * steps_per_epoch + k) and,
after every step, sets the rate `Schedule.lr(step + 1)` for the next one; after the epoch's
evaluation it calls `end_epoch(value)` (reduce-on-plateau decides there). So per-step schedules
(cosine, onecycle) change within an epoch and per-epoch ones (step, plateau) between epochs, and the
engines never decide that themselves. The `lr` column of history.csv is `Schedule.lr` at the end of
the epoch: the rate the next optimiser step uses (README, "history.csv").

The formulas reproduce torch's schedulers float for float (the loop's former LambdaLR for cosine with
warm-up, StepLR, OneCycleLR's and ReduceLROnPlateau's defaults), so torch runs train as they did.
"""

from __future__ import annotations

import math
from typing import Any

from nnlab.config import ExperimentConfig, OptimConfig, higher_is_better

# OneCycleLR's defaults (torch), kept so the schedule is the one torch users know
ONECYCLE_PCT_START, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4
ONECYCLE_MOMENTUM = (0.85, 0.95)  # (base, max): beta1 for Adam/AdamW, momentum for SGD
# ReduceLROnPlateau's defaults (torch): a relative gain of 1e-4 counts; smaller cuts than 1e-8 are skipped
PLATEAU_THRESHOLD, PLATEAU_EPS = 1e-4, 1e-8


def optimizer_kwargs(o: OptimConfig) -> dict[str, Any]:
    """The keyword arguments of `o.name`'s optimiser (torch.optim and nnlab.scratch.optim take the same)."""
    if o.name == "sgd":
        return {"lr": o.lr, "momentum": o.momentum, "nesterov": o.nesterov, "weight_decay": o.weight_decay}
    return {"lr": o.lr, "betas": o.betas, "weight_decay": o.weight_decay}


class Plateau:
    """Reduce-on-plateau: multiply the rate by `factor` once the monitored metric has not improved
    (relatively, by PLATEAU_THRESHOLD) for more than `patience` epochs; torch's ReduceLROnPlateau."""

    def __init__(self, lr: float, higher_is_better: bool, factor: float, patience: int) -> None:
        self.lr, self.higher, self.factor, self.patience = lr, higher_is_better, factor, patience
        self.best = -math.inf if higher_is_better else math.inf
        self.bad_epochs = 0

    def update(self, value: float) -> None:
        """One epoch's metric."""
        better = (value > self.best * (1 + PLATEAU_THRESHOLD) if self.higher
                  else value < self.best * (1 - PLATEAU_THRESHOLD))
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            cut = max(self.lr * self.factor, 0.0)
            if self.lr - cut > PLATEAU_EPS:
                self.lr = cut
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe (the NumPy engine keeps it in a checkpoint's JSON header): an infinite best is None."""
        return {"lr": self.lr, "best": self.best if math.isfinite(self.best) else None,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "num_bad_epochs" in state:  # a ReduceLROnPlateau state from a checkpoint of earlier versions
            state = {"lr": state["_last_lr"][0], "best": state["best"], "bad_epochs": state["num_bad_epochs"]}
        self.lr, self.bad_epochs = float(state["lr"]), int(state["bad_epochs"])
        best = state["best"]
        self.best = float(best) if best is not None and math.isfinite(best) else (
            -math.inf if self.higher else math.inf)


class Schedule:
    """The learning rate of optimiser step `step` (counted from 0 over the run) for `steps_per_epoch`
    optimiser steps an epoch, and OneCycle's momentum; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, steps_per_epoch: int) -> None:
        self.config, self.base = cfg.schedule, cfg.optim.lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = max(1, cfg.train.epochs * self.steps_per_epoch)
        s = self.config
        self.plateau = (Plateau(self.base, higher_is_better(cfg.eval.main_metric), s.factor, s.patience)
                        if s.name == "plateau" else None)
        self._decayed = [self.base]  # step: the rate after k decays

    def lr(self, step: int) -> float:
        """The rate of optimiser step `step`."""
        s = self.config
        if s.name == "cosine":
            return self.base * self._cosine_factor(step)
        if s.name == "onecycle":
            return self._onecycle(step, self.base / ONECYCLE_DIV, self.base,
                                  self.base / ONECYCLE_DIV / ONECYCLE_FINAL_DIV)
        if s.name == "step":
            return self._step_decayed(step // self.steps_per_epoch // s.step_size)
        if self.plateau is not None:
            return self.plateau.lr
        return self.base

    def momentum(self, step: int) -> float | None:
        """OneCycle's momentum (beta1 for Adam/AdamW) at `step`; None: the optimiser keeps its own."""
        if self.config.name != "onecycle":
            return None
        base, top = ONECYCLE_MOMENTUM
        return self._onecycle(step, top, base, top)

    def end_epoch(self, value: float | None) -> None:
        """After the epoch's evaluation: reduce-on-plateau judges `value` (None: no val split, no judgement)."""
        if self.plateau is not None and value is not None:
            self.plateau.update(value)

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs besides the step: the plateau's state (every other rate is a function of
        the step and the current config, so `nnlab resume --epochs N` re-plans them)."""
        return {"plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore `state_dict()`; a torch scheduler's state from an earlier version is read for plateau."""
        inner = state.get("plateau", state) if state else None
        if self.plateau is not None and inner:
            self.plateau.load_state_dict(inner)

    def _cosine_factor(self, step: int) -> float:
        """Linear warm-up over `warmup_epochs`, then half a cosine down to `min_lr` at the last step."""
        s = self.config
        warmup = int(s.warmup_epochs * self.steps_per_epoch)
        floor = s.min_lr / self.base
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, self.total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def _step_decayed(self, decays: int) -> float:
        """The base rate multiplied by gamma `decays` times over, as StepLR does (gamma ** decays may
        differ in the last bit); remembered, so a step costs one look-up."""
        while len(self._decayed) <= decays:
            self._decayed.append(self._decayed[-1] * self.config.gamma)
        return self._decayed[decays]

    def _onecycle(self, step: int, start: float, peak: float, end: float) -> float:
        """OneCycleLR's two cosine phases: start -> peak over the first 30% of the steps, peak -> end after."""
        rise_end = float(ONECYCLE_PCT_START * self.total) - 1
        if step <= rise_end:
            a, b, pct = start, peak, step / rise_end
        else:
            a, b, pct = peak, end, (step - rise_end) / (self.total - 1 - rise_end)
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
