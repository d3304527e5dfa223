"""What both engines (torch and NumPy) share around their epochs: the best-k tracker, one history row
per epoch, early stopping, and the head of metrics.json. One place, so both write the same run
directory and `nnlab report`, `compare` and `study` read them alike."""

from __future__ import annotations

from typing import Any

import numpy as np

from nnlab.config import ExperimentConfig, higher_is_better
from nnlab.runs.run import BestCheckpoints


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


def run_metrics(cfg: ExperimentConfig, engine: str, checkpoint: str, params: int, history: list[dict[str, float]],
                stopped_early: bool, train_seconds: float, data_info: dict[str, Any]) -> dict[str, Any]:
    """The head of metrics.json (before the per-split metrics)."""
    speed = float(np.mean([r["images_per_second"] for r in history])) if history else None
    waits = [r["data_wait_fraction"] for r in history if r.get("data_wait_fraction") is not None]
    return {"name": cfg.name, "engine": engine, "model": cfg.model.name, "main_metric": cfg.eval.main_metric,
            "checkpoint": checkpoint, "params": params, "epochs": len(history), "stopped_early": stopped_early,
            "train_seconds": train_seconds, "images_per_second": speed, "data": data_info} | (
        {"data_wait_fraction": float(np.mean(waits))} if waits else {})
