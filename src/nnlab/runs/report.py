"""Tables of finished runs: `nnlab report` (one run) and `nnlab compare` (a Markdown table, best first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnlab.config import higher_is_better
from nnlab.runs.run import Run


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
