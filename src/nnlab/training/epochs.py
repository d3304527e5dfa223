"""What both engines (torch and NumPy) share around their epochs: the best-k tracker, one history row
per epoch, early stopping, the head of metrics.json, and the epoch line (with the row sent to the
tracker, `tracking.py`, when the config asks for one). One place, so both write the same run
directory and `nnlab report`, `compare` and `study` read them alike."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from nnlab.config import ExperimentConfig, higher_is_better
from nnlab.datasets.kinds import is_drawings
from nnlab.metrics import UNCERTAIN_SE, standard_error
from nnlab.progress import format_seconds
from nnlab.runs.run import BestCheckpoints, Run
from nnlab.training.tracking import tracker_for


def best_tracker(cfg: ExperimentConfig) -> BestCheckpoints:
    """The best `train.keep_best` checkpoints by `eval.main_metric`, and the early-stopping count."""
    metric = cfg.eval.main_metric
    return BestCheckpoints(metric, higher_is_better(metric), cfg.train.keep_best)


def epoch_row(epoch: int, lr: float, train: dict[str, float], val: dict[str, float] | None,
              seconds: float, images_per_second: float) -> dict[str, Any]:
    """One history.csv row: the epoch (counted from 1), lr, train loss and accuracy, every val metric, time,
    and where the engine measures them, `data_wait_fraction` and `model_images_per_second`."""
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": train["loss"],
                           "train_accuracy": train["accuracy"]}
    if val is not None:
        row |= {f"val_{k}": v for k, v in val.items()}
    row |= {"epoch_seconds": seconds, "images_per_second": images_per_second}
    return row | {k: train[k] for k in ("data_wait_fraction", "model_images_per_second") if k in train}


def stop_early(cfg: ExperimentConfig, best: BestCheckpoints) -> bool:
    """Whether `train.early_stop_patience` epochs went by without the main metric improving."""
    return bool(cfg.train.early_stop_patience) and best.stale >= cfg.train.early_stop_patience


def early_stop_note(run: Run, epoch: int) -> str:
    """The line saying why training ended after `epoch` (counted from 0) and how to train more."""
    cfg = run.config
    return (f"stopped early after epoch {epoch + 1} of {cfg.train.epochs}: val_{cfg.eval.main_metric} did not "
            f"improve for {cfg.train.early_stop_patience} epochs (train.early_stop_patience); "
            f"`nnlab resume {run.path} --epochs N` trains more, its patience counted afresh")


def run_metrics(cfg: ExperimentConfig, engine: str, checkpoint: str, params: int, history: list[dict[str, float]],
                stopped_early: bool, train_seconds: float, data_info: dict[str, Any]) -> dict[str, Any]:
    """The head of metrics.json (before the per-split metrics)."""
    speed = float(np.mean([r["images_per_second"] for r in history])) if history else None
    waits = [r["data_wait_fraction"] for r in history if r.get("data_wait_fraction") is not None]
    return {"name": cfg.name, "engine": engine, "model": cfg.model.name, "main_metric": cfg.eval.main_metric,
            "checkpoint": checkpoint, "params": params, "epochs": len(history), "stopped_early": stopped_early,
            "train_seconds": train_seconds, "images_per_second": speed, "data": data_info} | (
        {"data_wait_fraction": float(np.mean(waits))} if waits else {})


class EpochLog:
    """One summary line per epoch (epoch, train loss, the main val metric, lr, img/s, time, ETA), printed
    whether or not stdout is a terminal (a notebook, `nohup`, CI logs all see it) and appended to
    RUN/train.log. Both engines call it with their history row."""

    def __init__(self, run: Run, echo: bool = True, val_examples: int = 0) -> None:
        self.run, self.echo = run, echo
        self.file = run.path / "train.log"
        self.start = time.perf_counter()
        self.done = 0
        self.tracker = tracker_for(run)  # train.tracking: the row goes to MLflow too
        #: the val split's size: a main metric too uncertain at that size is shown with its standard error
        self.val_examples = val_examples
        self.unit = "drawings" if is_drawings(run.config.data) else "images"
        self.warned = False

    def line(self, row: dict[str, Any], wall: float, epochs_left: int) -> str:
        """The text for one history row; `wall` is the mean wall time of this session's epochs."""
        total = self.run.config.train.epochs
        metric = self.run.config.eval.main_metric
        parts = [f"epoch {int(row['epoch'])}/{total}", f"train_loss {row['train_loss']:.4f}"]
        if f"val_{metric}" in row:
            value = row[f"val_{metric}"]
            se = self.uncertainty(value)
            parts.append(f"val_{metric} {value:.4f}" + (f" (+-{se:.2g}, {self.val_examples} {self.unit})" if se else ""))
        parts += [f"lr {row['lr']:.3g}", f"{row['images_per_second']:,.0f} img/s"]
        if "data_wait_fraction" in row:
            parts.append(f"data wait {row['data_wait_fraction']:.0%}")
        parts += [f"{row['epoch_seconds']:.1f} s", f"ETA {format_seconds(wall * epochs_left)}"]
        return "  ".join(parts)

    def uncertainty(self, value: float) -> float | None:
        """The main metric's standard error on the val split when it exceeds `UNCERTAIN_SE`, else None."""
        se = standard_error(self.run.config.eval.main_metric, value, self.val_examples)
        return se if se is not None and se > UNCERTAIN_SE else None

    def note(self, text: str) -> None:
        """A line that is not an epoch's (why training stopped), in train.log and printed like the epochs'."""
        with self.file.open("a") as fh:
            fh.write(text + "\n")
        if self.echo:
            print(text, flush=True)

    def __call__(self, row: dict[str, Any]) -> str:
        self.done += 1
        wall = (time.perf_counter() - self.start) / self.done
        metric = f"val_{self.run.config.eval.main_metric}"
        se = self.uncertainty(row[metric]) if metric in row else None
        if se and not self.warned:  # once per session, before the first line that shows it
            self.warned = True
            self.note(f"note: the val split holds {self.val_examples} {self.unit}, so {metric} {row[metric]:.4f} is "
                      f"uncertain by about +-{se:.2g} (its standard error, sqrt(m(1 - m)/n)): differences between "
                      "epochs or runs smaller than twice that are noise; a larger data.val_fraction narrows it")
        text = self.line(row, wall, self.run.config.train.epochs - int(row["epoch"]))
        with self.file.open("a") as fh:
            fh.write(text + "\n")
        if self.echo:
            print(text, flush=True)
        if self.tracker is not None:
            self.tracker.on_epoch_end(row)
        return text

