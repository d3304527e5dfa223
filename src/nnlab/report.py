"""Plots and tables of finished runs: history and confusion plots, `nnlab report`, `nnlab compare`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnlab.runs import Run  # noqa: E402

MAX_CONFUSION_CLASSES = 50


def write_run_plots(run: Run, confusion: tuple[np.ndarray, list[str]] | None = None) -> list[Path]:
    """plots/history.png always; plots/confusion.png when a confusion matrix is given."""
    written = [plot_history(run.history(), run.config.eval.main_metric, run.plots / "history.png")]
    if confusion is not None:
        written.append(plot_confusion(*confusion, run.plots / "confusion.png"))
    return written


def plot_history(history: list[dict[str, float]], metric: str, path: Path) -> Path:
    """Loss and the main metric per epoch, train and val side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [r["epoch"] for r in history]
    for ax, name in zip(axes, ("loss", metric), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{name}"
            values = [r.get(key, np.nan) for r in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix; beyond 50 classes only the most confused classes are shown."""
    cm = np.asarray(cm, dtype=float)
    shown = np.arange(len(classes))
    if len(classes) > MAX_CONFUSION_CLASSES:
        off = cm - np.diag(np.diag(cm))
        shown = np.sort(np.argsort(-(off.sum(0) + off.sum(1)), kind="stable")[:MAX_CONFUSION_CLASSES])
    sub = cm[np.ix_(shown, shown)]
    rate = sub / np.maximum(cm[shown].sum(1, keepdims=True), 1)
    n = len(shown)
    size = min(16, 3 + 0.32 * n)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    names = [classes[i] for i in shown]
    ax.set_xticks(range(n), names, rotation=90, fontsize=max(5, 10 - n // 10))
    ax.set_yticks(range(n), names, fontsize=max(5, 10 - n // 10))
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if rate[i, j] >= 0.005:
                    ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "confusion (row-normalised)"
    if len(classes) > n:
        title += f": the {n} most confused of {len(classes)} classes"
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- text


def run_summary(run: Run) -> dict[str, Any]:
    """The headline numbers of a run, as `nnlab report` and `nnlab compare` show them."""
    m = run.read_json("metrics.json")
    final = "test" if "test" in m else "val"
    row = {"run": run.path.name, "model": m.get("model"), "engine": m.get("engine"), "split": final,
           "params": m.get("params"), "epochs": m.get("epochs"), "train_seconds": m.get("train_seconds"),
           "images_per_second": m.get("images_per_second")}
    row |= {k: v for k, v in m.get(final, {}).items() if isinstance(v, (int, float))}
    return row


def format_report(run: Run) -> str:
    m = run.read_json("metrics.json")
    lines = [f"run        {run.path}", f"model      {m.get('model')} ({m.get('params'):,} parameters, {m.get('engine')})",
             f"trained    {m.get('epochs')} epochs in {m.get('train_seconds', 0):.1f} s"
             f" ({m.get('images_per_second') or 0:,.0f} images/s)", f"checkpoint {m.get('checkpoint')}"]
    for split in ("val", "test"):
        if split in m:
            lines.append(f"{split:<10} " + "  ".join(f"{k} {v:.4f}" for k, v in m[split].items()
                                                    if isinstance(v, float) and k != "loss"))
    if m.get("top_confusions"):
        lines.append("most confused (true -> predicted, count):")
        lines += [f"  {t} -> {p}: {c}" for t, p, c, *_ in m["top_confusions"][:5]]
    plots = sorted(p.name for p in run.plots.glob("*.png"))
    lines.append(f"plots      {run.plots} ({', '.join(plots)})")
    return "\n".join(lines)


def compare_table(runs: Sequence[Run], metric: str | None = None) -> str:
    """A Markdown table of runs sorted by the main metric (best first)."""
    from nnlab.metrics import higher_is_better

    rows = [run_summary(r) for r in runs]
    metric = metric or runs[0].read_json("metrics.json").get("main_metric", "accuracy")
    higher = higher_is_better(metric)
    rows.sort(key=lambda r: r.get(metric, -np.inf if higher else np.inf), reverse=higher)
    metric_cols = [c for c in ("accuracy", "top3_accuracy", "map3", "macro_f1", "log_loss") if any(c in r for r in rows)]
    if metric not in metric_cols:
        metric_cols.insert(0, metric)
    cols = ["run", "model", "engine", "split", *metric_cols, "params", "train_seconds", "images_per_second"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
