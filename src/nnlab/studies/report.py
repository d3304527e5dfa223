"""A study's report: per variant mean +- std over seeds, per pair the difference, Welch's test and a
verdict; report.md, report.json and plots."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.config import higher_is_better
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write_text, read_classes
from nnlab.runs.plots import mpl
from nnlab.runs.run import Run
from nnlab.studies.plan import ERROR_FILE, REPORT_JSON, REPORT_MD, CellOutcome, Study
from nnlab.studies.stats import CHANCE_FACTOR, at_chance, format_amount, holm, in_points, verdict, welch

# --------------------------------------------------------------------------- report


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _mean(values: Sequence[float | None]) -> float:
    ok = _finite(values)
    return float(np.mean(ok)) if ok else math.nan


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def collect(study: Study, outcomes: Sequence[CellOutcome]) -> dict[str, Any]:
    """The report's numbers from the finished cells' metrics.json and history.csv."""
    s, metric = study.settings, study.settings.metric
    variants: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[int, list[float]]] = {}
    splits_used, curve_keys, cells = set(), set(), []
    for o in outcomes:
        entry = {"variant": o.cell.variant, "seed": o.cell.seed, "path": str(o.cell.path.relative_to(study.out)),
                 "status": o.status, "error": o.error}
        cells.append(entry)
        v = variants.setdefault(o.cell.variant, {"overrides": study.variants[o.cell.variant], "seeds": [],
                                                  "values": [], "val_values": [], "params": [],
                                                  "train_seconds": [], "images_per_second": []})
        metrics_file = o.cell.path / "metrics.json"
        if o.status == "failed" or not metrics_file.is_file():
            continue
        m = json.loads(metrics_file.read_text())
        split = "test" if "test" in m else "val"
        if metric not in m.get(split, {}):
            raise NnlabError(f"{metrics_file}: no {split} metric {metric!r} (it has: "
                             f"{', '.join(k for k, x in m.get(split, {}).items() if isinstance(x, (int, float)))}); "
                             "set study.metric to one of them")
        splits_used.add(split)
        entry["value"] = m[split][metric]
        v["seeds"].append(o.cell.seed)
        v["values"].append(m[split][metric])
        v["val_values"].append(m.get("val", {}).get(metric))
        for key in ("params", "train_seconds", "images_per_second"):
            v[key].append(m.get(key))
        if (o.cell.path / "classes.txt").is_file():
            v["classes"] = len(read_classes(o.cell.path / "classes.txt"))
        history = Run(o.cell.path, o.cell.config).history()
        key = f"val_{metric}" if any(f"val_{metric}" in r for r in history) else "val_accuracy"
        curve_keys.add(key)
        for row in history:
            if key in row:
                curves.setdefault(o.cell.variant, {}).setdefault(int(row["epoch"]), []).append(row[key])
    table = {}
    for name, v in variants.items():
        params = sorted({p for p in v["params"] if p is not None})
        row = {"n": len(v["values"]), "seeds": v["seeds"], "overrides": v["overrides"],
               f"{metric}_values": v["values"],
               f"{metric}_mean": _mean(v["values"]), f"{metric}_std": _std(_finite(v["values"])),
               "params": params[0] if len(params) == 1 else (params or None),
               "train_seconds": _mean(v["train_seconds"]), "images_per_second": _mean(v["images_per_second"])}
        row["val_mean"] = _mean(v["val_values"])
        row["classes"] = v.get("classes")
        row["at_chance"] = at_chance(row[f"{metric}_mean"], metric, v.get("classes"))
        table[name] = row
    names = list(variants)
    pairs = []
    for a, b in itertools.combinations(names, 2):
        w = welch(variants[a]["values"], variants[b]["values"])
        pairs.append({"a": a, "b": b, "diff": w.diff, "t": w.t, "df": w.df, "p": w.p,
                      "ci_low": w.ci_low, "ci_high": w.ci_high, "note": w.note})
    for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = float(adjusted)
        pair |= verdict(pair["a"], pair["b"], pair["diff"], pair["p_holm"], s.threshold, metric, s.significance,
                        pair["note"], p_name="Holm-adjusted p")
    return {"name": study.name, "config": study.source, "metric": metric,
            "best_by_val": best_by_val(table, higher_is_better(metric)),
            "split": "/".join(sorted(splits_used)) or None, "higher_is_better": higher_is_better(metric),
            "threshold": s.threshold, "significance": s.significance, "seeds": s.seeds,
            "cells_total": len(outcomes), "cells_finished": sum(len(v["values"]) for v in variants.values()),
            "variants": table, "pairwise": pairs, "cells": cells,
            "curve_metric": "/".join(sorted(curve_keys)) or f"val_{metric}", "curves": {
                name: {"epochs": sorted(c), "mean": [_mean(c[e]) for e in sorted(c)],
                       "std": [_std(c[e]) for e in sorted(c)], "n": [len(c[e]) for e in sorted(c)]}
                for name, c in curves.items()}}


def best_by_val(table: dict[str, dict[str, Any]], higher: bool) -> str | None:
    """The variant a practitioner would pick: the best mean on the validation split (never on test)."""
    scored = {name: row["val_mean"] for name, row in table.items() if math.isfinite(row["val_mean"])}
    if not scored:
        return None
    return (max if higher else min)(scored, key=scored.get)


def write_report(study: Study, outcomes: Sequence[CellOutcome]) -> dict[str, Any]:
    """report.json, report.md and plots/ in the study directory; returns the report's data."""
    data = collect(study, outcomes)
    plots = study.out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    data["plots"] = [str(p.relative_to(study.out)) for p in
                     (plot_accuracy(data, plots / "accuracy.png"), plot_curves(data, plots / "curves.png"))]
    atomic_write_text(study.out / REPORT_JSON, json.dumps(_json_safe(data), indent=2) + "\n")
    atomic_write_text(study.out / REPORT_MD, format_report(data))
    return data


def _json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: float | None, metric: str, spread: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-" if spread else "n/a"
    return f"{value * 100:.2f}" if in_points(metric) else f"{value:.4f}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def format_tables(data: dict[str, Any]) -> str:
    """The variant table and the pairwise table, in Markdown (what `nnlab study` prints)."""
    metric = data["metric"]
    unit = " (%)" if in_points(metric) else ""
    split = data["split"] or "test"
    lines = [f"| variant | overrides | n | {split} {metric}{unit} mean ± std | per seed | params | train s | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in data["variants"].items():
        mean, std = v[f"{metric}_mean"], v[f"{metric}_std"]
        overrides = ", ".join(f"{k}={json.dumps(x)}" for k, x in v["overrides"].items()) or "-"
        per_seed = ", ".join(_fmt(x, metric) for x in v[f"{metric}_values"]) or "-"
        params = f"{v['params']:,}" if isinstance(v["params"], int) else str(v["params"] or "-")
        flag = f" (at chance: {v['classes']} classes)" if v.get("at_chance") else ""
        lines.append(f"| {name} | {overrides} | {v['n']} | {_fmt(mean, metric)} ± {_fmt(std, metric, True)}{flag} | "
                     f"{per_seed} | {params} | {_num(v['train_seconds'])} | {_num(v['images_per_second'])} |")
    diff_unit = " (pp)" if in_points(metric) else ""
    lines += ["", f"| A | B | A − B{diff_unit} | 95% CI{diff_unit} | t | df | p (Welch) | p (Holm) | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in data["pairwise"]:
        ci = (f"[{_fmt(p['ci_low'], metric)}, {_fmt(p['ci_high'], metric)}]"
              if math.isfinite(p["ci_low"]) else "-")
        lines.append(f"| {p['a']} | {p['b']} | {_fmt(p['diff'], metric)} | {ci} | {_num(p['t'])} | {_num(p['df'])} | "
                     f"{_num(p['p'])} | {_num(p['p_holm'])} | {p['verdict']} |")
    return "\n".join(lines) + "\n"


def format_report(data: dict[str, Any]) -> str:
    metric, threshold, alpha = data["metric"], data["threshold"], data["significance"]
    npairs = len(data["pairwise"])
    failed = [c for c in data["cells"] if c["status"] == "failed"]
    seeds = ", ".join(map(str, data["seeds"]))
    lines = [f"# Study {data['name']}", "",
             f"{data['cells_finished']} of {data['cells_total']} cells finished: {len(data['variants'])} variants "
             f"x seeds {seeds}, from `{data['config']}`; each cell is a run directory `<variant>/seed<k>/`. "
             f"Metric: {data['split'] or 'test'} {metric} of each run's best checkpoint (picked on val), "
             "mean ± sample standard deviation over seeds.", "", format_tables(data),
             f"Verdict: *better* / *worse* when |A − B| exceeds {format_amount(threshold, metric)}, *within* otherwise; "
             f"*significant* when Welch's t-test (unequal variances, seeds as independent runs), adjusted by Holm "
             f"for the {npairs} comparisons made here, gives p (Holm) < {alpha:g}; "
             f"p (Welch) is the unadjusted value. With {len(data['seeds'])} seeds a test only detects large, consistent "
             "differences: *not significant* means 'not shown', not 'equal'. Cells of the same seed share the data "
             "split and order across variants; the seed also sets the initialisation.", ""]
    best = data.get("best_by_val")
    if best is not None:
        row = data["variants"][best]
        test_mean = row[f"{metric}_mean"]
        lines += [f"Chosen by validation {metric}: **{best}** (val {_fmt(row['val_mean'], metric)}, "
                  f"{data['split'] or 'test'} {_fmt(test_mean, metric)}); its runs are `{best}/seed<k>/`.", ""]
    chance = [name for name, v in data["variants"].items() if v.get("at_chance")]
    if chance:
        lines += [f"At chance level (mean {metric} under {CHANCE_FACTOR:g} / classes): "
                  + ", ".join(f"**{n}**" for n in chance) + ". Such a variant learned (almost) nothing: check its "
                  "learning rate and epochs before reading its comparisons.", ""]
    notes = sorted({p["note"] for p in data["pairwise"] if p["note"]})
    if notes:
        lines += ["Untested pairs: " + "; ".join(notes) + ".", ""]
    if failed:
        lines += ["## Failed cells (re-run the same command to retry only these)", ""]
        lines += [f"- `{c['path']}`: {c['error']} (traceback in `{c['path']}/{ERROR_FILE}`)" for c in failed]
        lines.append("")
    lines += ["## Plots", "", "![accuracy per variant](plots/accuracy.png)", "",
              "![learning curves](plots/curves.png)", ""]
    return "\n".join(lines)


def plot_accuracy(data: dict[str, Any], path: Path) -> Path:
    """Mean +- std per variant (error bars), with each seed's value as a dot."""
    metric = data["metric"]
    scale = 100 if in_points(metric) else 1
    names = list(data["variants"])
    fig, ax = mpl().plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 4))
    for i, name in enumerate(names):
        v = data["variants"][name]
        values = np.asarray(_finite(v[f"{metric}_values"])) * scale
        if len(values):
            ax.errorbar(i, values.mean(), yerr=np.nan_to_num(_std(values)), fmt="o", ms=7, capsize=6,
                        color=f"C{i % 10}")
            ax.scatter(np.full(len(values), i + 0.12), values, s=12, color=f"C{i % 10}", alpha=0.6)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
    ax.set_ylabel(f"{data['split'] or 'test'} {metric}{' (%)' if scale == 100 else ''}")
    ax.set_title(f"{data['name']}: mean ± std over seeds (dots: seeds)", fontsize=10)
    ax.margins(x=0.15)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    mpl().plt.close(fig)
    return path


def plot_curves(data: dict[str, Any], path: Path) -> Path:
    """Validation metric per epoch for each variant: mean over seeds with a +-std band."""
    scale = 100 if in_points(data["curve_metric"]) else 1
    fig, ax = mpl().plt.subplots(figsize=(7, 4.2))
    for i, (name, c) in enumerate(data["curves"].items()):
        epochs = np.asarray(c["epochs"])
        mean, std = np.asarray(c["mean"]) * scale, np.nan_to_num(np.asarray(c["std"], dtype=float)) * scale
        ax.plot(epochs, mean, "-o", ms=3, color=f"C{i % 10}", label=name)
        ax.fill_between(epochs, mean - std, mean + std, color=f"C{i % 10}", alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{data['curve_metric']}{' (%)' if scale == 100 else ''}")
    ax.set_title(f"{data['name']}: learning curves (mean ± std over seeds)", fontsize=10)
    ax.xaxis.set_major_locator(mpl().MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if data["curves"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    mpl().plt.close(fig)
    return path
