"""The one entry point of training: `fit` dispatches on `engine` (torch or numpy); both write the same
run directory, so reports, studies and comparisons treat them alike."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from nnlab.config import ExperimentConfig
from nnlab.fileio import disk_full_error, is_disk_full
from nnlab.runs.run import Run
from nnlab.training.callbacks import Callback
from nnlab.training.loop import fit_torch
from nnlab.training.resources import check_resources
from nnlab.training.tracking import check_tracking, finish_run
from nnlab.training.numpy_engine import fit_numpy


def fit(cfg: ExperimentConfig, out: str | Path | None = None, resume_run: Run | None = None,
        stop_after_epoch: int | None = None, announce: Callable[[Run], None] | None = None,
        echo: bool = True, callbacks: Sequence[Callback] = (), restart_patience: bool = False) -> Run:
    """Train an experiment into a run directory (or carry on `resume_run`) and return the run.

    `announce` is called with the new run before training starts (the CLI prints its path);
    `stop_after_epoch` ends the session after that epoch as an interruption would (torch engine; for tests);
    `echo` prints one line per epoch (always written to RUN/train.log); `callbacks` (`nnlab.Callback`s) are
    called at the start, after each step (torch) and epoch, and at the end (`training/callbacks.py`).
    `restart_patience` (a resumed run extended to more epochs) counts early stopping's epochs afresh.
    A new run that fails before its first epoch ends (unknown model, unreadable data...) leaves no directory;
    a config this machine cannot train (`check_resources`) fails before one is made.
    """
    check_resources(cfg)
    check_tracking(cfg)
    created: list[Run] = []
    if resume_run is not None and os.environ.get("RANK", "0") == "0":  # DDP: the main process writes the run
        resume_run.hold()

    def on_create(run: Run) -> None:
        created.append(run)
        if announce is not None:
            announce(run)

    main = os.environ.get("RANK", "0") == "0"
    try:
        if cfg.engine == "numpy":
            run = fit_numpy(cfg, out=out, resume_run=resume_run, announce=on_create, echo=echo,
                            callbacks=callbacks, restart_patience=restart_patience)
        else:
            run = fit_torch(cfg, out=out, resume_run=resume_run, stop_after_epoch=stop_after_epoch,
                            announce=on_create, echo=echo, callbacks=callbacks,
                            restart_patience=restart_patience)
        if main:
            finish_run(run)  # train.tracking: the results to MLflow (an interrupted session stays running)
        return run
    except BaseException as exc:
        if main and (resume_run or created):
            finish_run(resume_run or created[0], "FAILED" if isinstance(exc, Exception) else "KILLED")
        removed = bool(created) and not created[0].history()
        if removed:
            created[0].discard()
        if is_disk_full(exc):  # a write no guard of its own turned into one line (train.log, plots, ...)
            run = resume_run or (created[0] if created else None)
            kept = ("the new run was removed" if removed or run is None else
                    f"the run is kept up to its last checkpoint (then `nnlab resume {run.path}`)")
            raise disk_full_error(run.path if run is not None else (out or "the run"), kept) from None
        raise
    finally:
        for run in (resume_run, *created):
            if run is not None:
                run.release()
