"""Tables of finished runs: `nnlab report` (one run) and `nnlab compare` (a Markdown table, best first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnlab.config import higher_is_better
from nnlab.progress import plural
from nnlab.runs.run import Run


def format_report(run: Run) -> str:
    m = run.read_json("metrics.json")
    lines = [f"run        {run.path}", f"model      {m.get('model')} ({m.get('params'):,} parameters, {m.get('engine')})",
             _trained_line(m), f"checkpoint {m.get('checkpoint')}"]
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


def _trained_line(m: dict[str, Any]) -> str:
    """How the weights came about: the training's epochs and time, or for `nnlab average` its own time and
    the checkpoints of the run it averaged."""
    avg = m.get("averaged")
    if avg:
        epochs = avg.get("epochs") or []
        span = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {', '.join(map(str, epochs))}"
        bn = ", BatchNorm recomputed" if avg.get("bn_recomputed") else ""
        return (f"averaged   {plural(len(avg.get('checkpoints') or []), 'checkpoint')} ({span}) of {avg.get('source')} "
                f"in {m.get('train_seconds') or 0:.1f} s{bn}")
    return (f"trained    {plural(m.get('epochs') or 0, 'epoch')} in {m.get('train_seconds', 0):.1f} s"
            f" ({m.get('images_per_second') or 0:,.0f} images/s)")


COMPARED = ("accuracy", "top3_accuracy", "map3", "macro_f1", "log_loss",  # classification
            "rank1", "rank5", "eer", "roc_auc", "tpr_at_fpr_0.001")             # open set (embedding runs)


def compare_table(runs: Sequence[Run], metric: str | None = None) -> str:
    """A Markdown table of runs sorted by the main metric (test where there is one, else val; best first),
    val and test in separate columns, open-set metrics for embedding runs, numbers formatted alike."""
    metrics = [r.read_json("metrics.json") for r in runs]
    metric = metric or metrics[0].get("main_metric", "accuracy")
    higher = higher_is_better(metric)
    rows = []
    for run, m in zip(runs, metrics, strict=True):
        row = {"run": run.path.name, "model": m.get("model"), "engine": m.get("engine"), "params": m.get("params"),
               "epochs": m.get("epochs"), "train_seconds": m.get("train_seconds"),
               "images_per_second": m.get("images_per_second")}
        for split in ("val", "test"):
            row |= {f"{split} {k}": v for k, v in m.get(split, {}).items() if isinstance(v, (int, float))}
        row["_key"] = row.get(f"test {metric}", row.get(f"val {metric}"))
        rows.append(row)
    rows.sort(key=lambda r: r["_key"] if r["_key"] is not None else (-np.inf if higher else np.inf), reverse=higher)
    names = [metric, *(c for c in COMPARED if c != metric)]
    metric_cols = [f"{split} {c}" for split in ("val", "test") for c in names if any(f"{split} {c}" in r for r in rows)]
    cols = ["run", "model", "engine", *metric_cols, "params", "epochs", "train_seconds", "images_per_second"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(c, r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _cell(column: str, value: Any) -> str:
    """Metrics with 4 decimals, counts with thousands separators, seconds with one decimal."""
    if value is None:
        return "-"
    if column in ("params", "epochs", "images_per_second"):
        return f"{value:,.0f}"
    if column == "train_seconds":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
