"""The one entry point of training: `fit` dispatches on `engine` (torch or numpy); both write the same
run directory, so reports, studies and comparisons treat them alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nnlab.config import ExperimentConfig
from nnlab.runs.run import Run
from nnlab.training.loop import fit_torch
from nnlab.training.numpy_engine import fit_numpy


def fit(cfg: ExperimentConfig, out: str | Path | None = None, resume_run: Run | None = None,
        stop_after_epoch: int | None = None, announce: Callable[[Run], None] | None = None) -> Run:
    """Train an experiment into a run directory (or carry on `resume_run`) and return the run.

    `announce` is called with the new run before training starts (the CLI prints its path);
    `stop_after_epoch` ends the session after that epoch as an interruption would (torch engine; for tests).
    """
    if cfg.engine == "numpy":
        return fit_numpy(cfg, out=out, resume_run=resume_run, announce=announce)
    return fit_torch(cfg, out=out, resume_run=resume_run, stop_after_epoch=stop_after_epoch, announce=announce)
