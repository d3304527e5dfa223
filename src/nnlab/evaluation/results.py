"""A finished run's results on disk, shared by both engines: metrics.json, predictions/<split>.csv, plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from nnlab import metrics
from nnlab.datasets.bundle import DataBundle
from nnlab.metrics import confusion_matrix, per_class_accuracy, top_confusions
from nnlab.runs.plots import write_run_plots
from nnlab.runs.run import Run


def write_results(run: Run, data: DataBundle, metrics: dict[str, Any], outputs: dict[str, np.ndarray]) -> dict:
    """Shared by both engines: metrics.json, predictions/<split>.csv, plots."""
    final = "test" if "test" in outputs else "val" if "val" in outputs else None
    if final is not None:
        y = data.labels[final]
        cm = confusion_matrix(y, outputs[final].argmax(1), len(data.classes))
        metrics["per_class_accuracy"] = {c: (None if np.isnan(a) else a)  # no examples: null, not NaN
                                         for c, a in zip(data.classes, per_class_accuracy(cm).tolist(), strict=True)}
        metrics["top_confusions"] = [list(c) for c in top_confusions(cm, data.classes, n=10)]
        metrics["confusion_split"] = final
    for split, probs in outputs.items():
        write_probabilities(run.path / "predictions" / f"{split}.csv", data.ids[split], probs, data.classes,
                            labels=data.labels[split], k=run.config.eval.top_k)
    run.write_json("metrics.json", metrics)
    write_run_plots(run, confusion=(cm, data.classes) if final is not None else None, split=final or "test")
    return metrics


def write_probabilities(path: Path, ids: np.ndarray, probs: np.ndarray, classes: list[str],
                        labels: np.ndarray | None = None, k: int = 3) -> Path:
    """CSV: id, [true label], the top-k class names, then one probability column per class; a row of NaN
    probabilities (an unreadable input) is written as 'unreadable' with empty probabilities."""
    path.parent.mkdir(parents=True, exist_ok=True)
    k = min(k, len(classes))
    unreadable = np.isnan(probs).any(1)
    top = metrics.top_k(np.where(unreadable[:, None], 0, probs), k)  # those rows are written apart
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["id"] + (["label"] if labels is not None else []) + [f"top{i + 1}" for i in range(k)]
        writer.writerow(header + [f"p_{c}" for c in classes])
        for i in range(len(ids)):
            row = [ids[i]] + ([classes[labels[i]]] if labels is not None else [])
            if unreadable[i]:  # an input that could not be read keeps its row
                writer.writerow(row + ["unreadable"] * k + [""] * len(classes))
                continue
            writer.writerow(row + [classes[j] for j in top[i]] + [f"{p:.6g}" for p in probs[i]])
    return path
