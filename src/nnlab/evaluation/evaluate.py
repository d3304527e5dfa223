"""Evaluating a model on a split: probabilities in batches, classification metrics keyed by id,
open-set metrics for identity splits, and `evaluate_run` behind `nnlab eval`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from nnlab.config import ExperimentConfig, apply_override, validate
from nnlab.datasets import DataBundle, build_data
from nnlab.device import gather_split, pick_device
from nnlab.errors import DataError, NnlabError
from nnlab.evaluation.openset import evaluate_open_set
from nnlab.evaluation.proba import predict_proba
from nnlab.metrics import evaluation_report
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained


def evaluate(model: nn.Module, data: DataBundle, split: str, device: str, amp: str, k: int) -> tuple[dict, np.ndarray]:
    """Metrics of one split (gathered across ranks, aligned by id); returns (metrics, probabilities)."""
    loader = data.loaders[split]
    probs = gather_split(loader, predict_proba(model, (batch[0] for batch in loader), device, amp))
    return evaluation_report(data.labels[split], probs, ids=data.ids[split], k=k), probs


def evaluate_split(model: nn.Module, data: DataBundle, split: str, device: str, cfg: ExperimentConfig,
                   run: Run | None = None) -> tuple[dict, np.ndarray | None]:
    """`evaluate`, except on the unseen people of an identity split (`data.split = 'identity'`, test):
    identification and verification metrics, with plots written into `run` when given, and no probabilities."""
    if split == "test" and getattr(cfg.data, "split", None) == "identity":  # image kinds only
        return evaluate_open_set(model, data, split, device, cfg, run), None
    return evaluate(model, data, split, device, cfg.train.amp, cfg.eval.top_k)


def evaluate_run(run_dir: Path, split: str | None = None, data_path: Path | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Metrics of a run's best checkpoint on one split (optionally of other data of the same kind); the
    default split is test where the data has one, else val (the result's "split" says which)."""
    run = Run.open(run_dir)
    raw = run.config.model_dump(mode="json", exclude_none=True)
    for item in overrides:
        apply_override(raw, item)
    reuse_splits = data_path is None and not overrides
    if data_path is not None:
        raw["data"]["path"] = str(Path(data_path).resolve())
    cfg = validate(raw, f"{run.path}/config.toml")
    data = build_data(cfg, run.path if reuse_splits else None)
    if split is None:
        split = "test" if data.has("test") else "val"
    if split not in data.loaders or not data.has(split):
        raise NnlabError(f"split {split!r} is empty or unknown (have: {', '.join(s for s in data.loaders if data.has(s))})")
    if data.classes != run.classes():
        raise DataError(f"the data's classes differ from the run's classes.txt ({len(data.classes)} vs "
                        f"{len(run.classes())}); cannot evaluate")
    device = pick_device(cfg.train.device)
    metrics, _ = evaluate_split(load_trained(run, device), data, split, device, cfg)
    return {"split": split, "examples": len(data.labels[split])} | metrics
