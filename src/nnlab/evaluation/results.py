"""A finished run's results on disk, shared by both engines: metrics.json, predictions/<split>.csv, plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from nnlab import metrics
from nnlab.datasets.bundle import DataBundle
from nnlab.fileio import atomic_output, kill_point
from nnlab.metrics import confusion_matrix, per_class_accuracy, top_confusions
from nnlab.runs.plots import plots_wanted, save, top_losses_figure, write_run_plots
from nnlab.runs.run import Run


def write_results(run: Run, data: DataBundle, metrics: dict[str, Any], outputs: dict[str, np.ndarray]) -> dict:
    """Shared by both engines: predictions/<split>.csv, plots (none with NNLAB_PLOTS=0), then metrics.json."""
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
    kill_point("predictions-written")
    if plots_wanted():  # before metrics.json, which marks the run finished: a kill before it, resume redoes them
        write_run_plots(run, confusion=(cm, data.classes) if final is not None else None, split=final or "test")
        if final is not None:
            write_top_losses(run, data, final, outputs[final])
        kill_point("plots-written")
    run.write_json("metrics.json", metrics)
    kill_point("metrics-written")
    return metrics


def write_top_losses(run: Run, data: DataBundle, split: str, probs: np.ndarray, k: int = 12) -> Path | None:
    """plots/top_losses.png: the split's k examples with the highest cross-entropy, for image data sets
    (whose bundle reads a raw image by id); drawing runs have `nnlab data show RUN --wrong`."""
    if data.image is None or len(data.ids[split]) != len(probs):
        return None
    y = data.labels[split]
    p_true = probs[np.arange(len(y)), y]
    loss = -np.log(np.clip(p_true, 1e-12, 1))
    order = np.argsort(-loss, kind="stable")[:k]
    guess = probs.argmax(1)
    names = data.classes
    images = [data.image(int(data.ids[split][i])) for i in order]
    titles = [f"{names[guess[i]]} / {names[y[i]]}\n{loss[i]:.2f} / {p_true[i]:.2f}" for i in order]
    return save(top_losses_figure(images, titles, [bool(guess[i] != y[i]) for i in order], split),
                run.plots / "top_losses.png")


def write_probabilities(path: Path, ids: np.ndarray, probs: np.ndarray, classes: list[str],
                        labels: np.ndarray | None = None, k: int = 3) -> Path:
    """CSV: id, [true label], the top-k class names, then one probability column per class; a row of NaN
    probabilities (an unreadable input) is written as 'unreadable' with empty probabilities."""
    path.parent.mkdir(parents=True, exist_ok=True)
    k = min(k, len(classes))
    unreadable = np.isnan(probs).any(1)
    top = metrics.top_k(np.where(unreadable[:, None], 0, probs), k)  # those rows are written apart
    with atomic_output(path, "w", newline="") as fh:
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
