"""Studies: a grid of variants x seeds, one run directory per cell, and an honest comparison.

    plan_study(config, grid, seeds)      -> Study (cells <out>/<variant>/seed<k>/, nothing run yet)
    run_study(study)                     -> StudyOutcome
        finished cells (metrics.json) are skipped, interrupted ones resumed from
        checkpoints/last.*, the rest trained from scratch, in parallel processes;
        a failing cell is recorded (error.txt) and the others go on
    write_report(study, outcomes)        -> report.md, report.json, plots/accuracy.png, plots/curves.png
        per variant: metric mean +- sample std over seeds, params, train time, images/s;
        per pair: difference, Welch's t-test (scipy), Holm-adjusted p, a plain verdict.

The study only calls `nnlab.train.fit` per cell, so any experiment works: model ablations,
learning-rate sweeps, loss comparisons, the NumPy engine.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.config import ExperimentConfig, StudyConfig, apply_override, load_config, set_key, validate
from nnlab.errors import ConfigError, NnlabError

REPORT_MD, REPORT_JSON, ERROR_FILE = "report.md", "report.json", "error.txt"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]+$")
# A comma starts a new override only when `key=` follows, so list values like [512,128] survive.
_OVERRIDE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w-]*(?:\.[\w-]+)*\s*=)")


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, eq=False)  # hashed by identity: the config is not hashable
class Cell:
    """One (variant, seed) pair: its resolved experiment and its run directory."""

    variant: str
    seed: int
    path: Path
    config: ExperimentConfig

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"


@dataclass
class Study:
    """A planned study: the settings, the variants' overrides and every cell."""

    name: str
    out: Path
    settings: StudyConfig
    variants: dict[str, dict[str, Any]]
    cells: list[Cell]
    source: str = "config"


def parse_grid_option(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME=key=value[,key=value...]` (the `--grid` option) -> (name, {dotted key: value})."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not NAME_PATTERN.match(name):
        raise ConfigError(f"--grid {text!r}: expected NAME=key=value[,key=value...] with a NAME of "
                          "letters, digits, '_', '-', '.', '+'")
    raw: dict[str, Any] = {}
    for item in filter(str.strip, _OVERRIDE_SPLIT.split(rest)):
        try:
            apply_override(raw, item.strip())
        except ConfigError as exc:
            raise ConfigError(f"--grid {text!r}: {exc}") from None
    return name, flatten(raw)


def flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested override tables -> dotted keys (`{model = {name = "x"}}` and `{"model.name" = "x"}` agree)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, dotted + ".")
        else:
            flat[dotted] = value
    return flat


def plan_study(config: str | Path | ExperimentConfig, overrides: Sequence[str] = (), grid: Sequence[str] = (),
               seeds: int | None = None, out: str | Path | None = None, workers: int | None = None) -> Study:
    """Expand a study into its cells without running anything.

    `config` is a TOML file (its `[study]` section gives the grid and seeds) or a config;
    `overrides` (`--set`) apply to every cell; `grid` (`--grid NAME=OVERRIDES`) replaces the
    file's grid; `seeds` = K means seeds 0..K-1. A variant's overrides win over `--set`.
    The default directory `studies/<name>/` is deterministic, so running again resumes.
    """
    if isinstance(config, ExperimentConfig):
        base, source = load_config(None, overrides, base=config.model_dump(mode="json", exclude_none=True)), "config"
    else:
        base, source = load_config(config, overrides), str(config)
    settings = (base.study or StudyConfig()).model_copy(deep=True)
    if grid:
        variants = dict(parse_grid_option(g) for g in grid)
        if len(variants) != len(grid):
            raise ConfigError("--grid: each variant NAME must be given once")
    else:
        variants = {name: flatten(o) for name, o in settings.grid.items()}
    if not variants:
        variants = {"base": {}}
    for name in variants:
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"{source}: study.grid: variant name {name!r} may only hold letters, digits, "
                              "'_', '-', '.', '+' (it names a folder)")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds}: give at least one seed")
        settings.seeds = list(range(seeds))
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise ConfigError(f"{source}: study.seeds must be distinct and not empty (got {settings.seeds})")
    if workers is not None:
        settings.workers = workers
    from nnlab.metrics import higher_is_better

    try:
        higher_is_better(settings.metric)
    except ConfigError as exc:
        raise ConfigError(f"{source}: study.metric: {exc}") from None
    out_dir = Path(out) if out is not None else Path("studies") / base.name
    from nnlab.runs import resolve_paths

    template = base.model_dump(mode="json", exclude_none=True)
    template.pop("study", None)
    cells = []
    for seed, variant in itertools.product(settings.seeds, variants):  # seed-major: a cut-short study
        raw = json.loads(json.dumps(template))                          # still covers every variant
        where = f"{source}: study.grid.{variant}"
        for key, value in variants[variant].items():
            set_key(raw, key, value, f"{where}: {key}")
        raw["seed"], raw["name"] = seed, f"{base.name}-{variant}-seed{seed}"
        cfg = resolve_paths(validate(raw, where))
        cells.append(Cell(variant, seed, (out_dir / variant / f"seed{seed}").resolve(), cfg))
    return Study(base.name, out_dir.resolve(), settings, variants, cells, source)


# --------------------------------------------------------------------------- state of a cell


def cell_state(cell: Cell) -> str:
    """'done' (metrics.json), 'resume' (a checkpoint to go on from) or 'new' (start from scratch).

    A finished cell trained with a different config is an error: mixing it into the report
    would compare unlike things. An unfinished one is simply started again.
    """
    saved_file = cell.path / "config.toml"
    if not saved_file.is_file():
        return "new"
    try:
        saved = load_config(saved_file).model_dump(mode="json")
    except ConfigError:
        saved = {}
    expected = cell.config.model_dump(mode="json")
    finished = (cell.path / "metrics.json").is_file()
    if saved != expected:
        if finished:
            saved, expected = flatten(saved), flatten(expected)
            changed = sorted(k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k))
            raise ConfigError(f"{cell.path} was trained with a different config (differs in: "
                              f"{', '.join(changed[:6]) or 'schema'}); choose another --out or delete that folder")
        return "new"
    if finished:
        return "done"
    return "resume" if any((cell.path / "checkpoints").glob("last.*")) else "new"


# --------------------------------------------------------------------------- running


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # done (already finished), trained, resumed, failed
    seconds: float = 0.0
    error: str | None = None


@dataclass
class StudyOutcome:
    study: Study
    cells: list[CellOutcome]
    report: dict[str, Any]
    workers: int
    wall_seconds: float

    @property
    def failed(self) -> list[CellOutcome]:
        return [c for c in self.cells if c.status == "failed"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (macOS, Windows)
        return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    """Each worker process: its share of the cores, and no per-epoch bars (one bar over cells)."""
    import torch
    from threadpoolctl import threadpool_limits

    os.environ["NNLAB_PROGRESS"] = "0"
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # BLAS, for NumPy-engine cells (a cell's own train.threads still wins)


def _train_cell(config: dict[str, Any], path: str, resume: bool) -> dict[str, Any]:
    """Train or resume one cell; never raises, so one failure cannot stop the others."""
    from nnlab.runs import Run
    from nnlab.train import fit

    start, where = time.perf_counter(), Path(path)
    try:
        if resume:
            run = Run.open(where)
            fit(run.config, resume_run=run)
        else:
            fit(validate(config, str(where)), out=where)
        (where / ERROR_FILE).unlink(missing_ok=True)
        return {"ok": True, "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001  (reported per cell, with the traceback in error.txt)
        where.mkdir(parents=True, exist_ok=True)
        (where / ERROR_FILE).write_text(traceback.format_exc())
        message = str(exc) if isinstance(exc, NnlabError) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "seconds": time.perf_counter() - start, "error": message}


def _prefetch(cells: Sequence[Cell]) -> None:
    """Download official data once, before parallel cells could race on the same files."""
    from nnlab.data.images import download_idx

    seen = set()
    for c in cells:
        d = c.config.data
        if d.kind == "idx" and d.download and d.path and (d.path, d.dataset) not in seen:
            seen.add((d.path, d.dataset))
            download_idx(d.path, d.dataset or "mnist")


def run_study(study: Study, workers: int | None = None) -> StudyOutcome:
    """Run the cells not finished yet (in parallel processes when there are cores), then write the report.

    `workers` (default: study.workers, else min(cells to run, cores)); each worker process gets
    max(1, cores // workers) torch threads.
    """
    from nnlab.progress import progress

    start = time.perf_counter()
    states = {c: cell_state(c) for c in study.cells}
    todo = [c for c in study.cells if states[c] != "done"]
    outcomes = {c: CellOutcome(c, "done") for c in study.cells if states[c] == "done"}
    cores = available_cores()
    workers = max(1, min(workers or study.settings.workers or cores, max(1, len(todo))))
    for c in todo:
        if states[c] == "new" and c.path.exists():
            shutil.rmtree(c.path)  # a cell that died before its first checkpoint starts again
        c.path.parent.mkdir(parents=True, exist_ok=True)
    if todo:
        _prefetch(todo)

    bar = progress(total=len(study.cells), initial=len(outcomes), desc=f"study {study.name}", unit="cell")

    def record(cell: Cell, result: dict[str, Any]) -> None:
        status = ("resumed" if states[cell] == "resume" else "trained") if result["ok"] else "failed"
        outcomes[cell] = CellOutcome(cell, status, result["seconds"], result.get("error"))
        bar.update()
        bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes.values()))

    tasks = {c: (c.config.model_dump(mode="json", exclude_none=True), str(c.path), states[c] == "resume")
             for c in todo}
    try:
        if workers == 1:  # in this process: no start-up cost, and tracebacks stay simple
            for c in todo:
                record(c, _train_cell(*tasks[c]))
        elif todo:
            _run_parallel(todo, tasks, workers, max(1, cores // workers), record)
    finally:
        bar.close()
    ordered = [outcomes[c] for c in study.cells]
    report = write_report(study, ordered)
    return StudyOutcome(study, ordered, report, workers, time.perf_counter() - start)


def _run_parallel(todo: list[Cell], tasks: dict[Cell, tuple], workers: int, threads: int,
                  record: Callable[[Cell, dict[str, Any]], None]) -> None:
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    pending: dict[Future, Cell] = {}
    try:
        for c in todo:
            pending[pool.submit(_train_cell, *tasks[c])] = c
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = {"ok": False, "seconds": 0.0,
                              "error": "its worker process died (out of memory or killed); re-run to retry"}
                record(cell, result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# --------------------------------------------------------------------------- statistics


@dataclass
class Welch:
    """Welch's t-test of mean(a) - mean(b); p is nan (with a note) where the test is undefined."""

    diff: float
    t: float = math.nan
    df: float = math.nan
    p: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    note: str | None = None


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch:
    """Welch's unequal-variance t-test (scipy.stats.ttest_ind(equal_var=False)) with its confidence interval.

    With fewer than two values on a side there is no variance estimate, and with zero spread on
    both sides the t statistic divides by zero: scipy would report p = 0 for any difference
    there, which claims certainty seeds cannot give, so p stays nan and the note says why.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if min(len(a), len(b)) < 2:
        return Welch(diff, note=f"n = {min(len(a), len(b))} on one side: no variance estimate, no test")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Welch(diff, note="identical values across seeds on both sides: zero variance, no test")
    with warnings.catch_warnings():  # one flat side: scipy warns of float round-off in a variance of ~0
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return Welch(diff, float(res.statistic), float(res.df), float(res.pvalue), float(ci.low), float(ci.high))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values for a family of tests (nan entries are left out and stay nan)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def in_points(metric: str) -> bool:
    """Fraction metrics (accuracy, MAP, F1, ...) are compared in percentage points; losses in their own units."""
    return "loss" not in metric


def _amount(value: float, metric: str) -> str:
    return f"{value * 100:.2f} pp" if in_points(metric) else f"{value:.4g}"


def verdict(a: str, b: str, diff: float, p: float, threshold: float, metric: str = "accuracy",
            alpha: float = 0.05, note: str | None = None) -> dict[str, Any]:
    """Plain words for `a - b = diff`: better / worse / within the threshold, and whether p < alpha."""
    from nnlab.metrics import higher_is_better

    gain = diff if higher_is_better(metric) else -diff
    if not math.isfinite(diff):
        direction = "unknown"
        words = f"{a} vs {b}: no difference to compare"
    elif abs(diff) <= threshold + 1e-12:
        direction = "within"
        words = f"{a} within {_amount(threshold, metric)} of {b}"
    else:
        direction = "better" if gain > 0 else "worse"
        words = f"{a} {direction} than {b} by {_amount(abs(diff), metric)}"
    if math.isfinite(p):
        significant: bool | None = bool(p < alpha)
        words += f"; {'significant' if significant else 'not significant'} at {alpha:g} (p = {p:.3g})"
    else:
        significant = None
        words += f"; untested ({note or 'no p-value'})"
    return {"direction": direction, "significant": significant, "verdict": words}


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
    from nnlab.metrics import higher_is_better
    from nnlab.runs import Run

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
        table[name] = row
    names = list(variants)
    pairs = []
    for a, b in itertools.combinations(names, 2):
        w = welch(variants[a]["values"], variants[b]["values"])
        pairs.append({"a": a, "b": b, "diff": w.diff, "t": w.t, "df": w.df, "p": w.p,
                      "ci_low": w.ci_low, "ci_high": w.ci_high, "note": w.note})
    for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = float(adjusted)
        pair |= verdict(pair["a"], pair["b"], pair["diff"], pair["p"], s.threshold, metric, s.significance,
                        pair["note"])
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
    from nnlab.runs import atomic_write_text

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
        lines.append(f"| {name} | {overrides} | {v['n']} | {_fmt(mean, metric)} ± {_fmt(std, metric, True)} | "
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
             f"Verdict: *better* / *worse* when |A − B| exceeds {_amount(threshold, metric)}, *within* otherwise; "
             f"*significant* when Welch's t-test (unequal variances, seeds as independent runs) gives p < {alpha:g}. "
             f"p (Holm) adjusts for the {npairs} comparisons made here: a difference significant by p but not by "
             f"p (Holm) may well be chance. With {len(data['seeds'])} seeds a test only detects large, consistent "
             "differences: *not significant* means 'not shown', not 'equal'. Cells of the same seed share the data "
             "split and order across variants; the seed also sets the initialisation.", ""]
    best = data.get("best_by_val")
    if best is not None:
        row = data["variants"][best]
        test_mean = row[f"{metric}_mean"]
        lines += [f"Chosen by validation {metric}: **{best}** (val {_fmt(row['val_mean'], metric)}, "
                  f"{data['split'] or 'test'} {_fmt(test_mean, metric)}); its runs are `{best}/seed<k>/`.", ""]
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
    from nnlab.report import plt

    metric = data["metric"]
    scale = 100 if in_points(metric) else 1
    names = list(data["variants"])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 4))
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
    plt.close(fig)
    return path


def plot_curves(data: dict[str, Any], path: Path) -> Path:
    """Validation metric per epoch for each variant: mean over seeds with a +-std band."""
    from matplotlib.ticker import MaxNLocator

    from nnlab.report import plt

    scale = 100 if in_points(data["curve_metric"]) else 1
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, c) in enumerate(data["curves"].items()):
        epochs = np.asarray(c["epochs"])
        mean, std = np.asarray(c["mean"]) * scale, np.nan_to_num(np.asarray(c["std"], dtype=float)) * scale
        ax.plot(epochs, mean, "-o", ms=3, color=f"C{i % 10}", label=name)
        ax.fill_between(epochs, mean - std, mean + std, color=f"C{i % 10}", alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{data['curve_metric']}{' (%)' if scale == 100 else ''}")
    ax.set_title(f"{data['name']}: learning curves (mean ± std over seeds)", fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if data["curves"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
