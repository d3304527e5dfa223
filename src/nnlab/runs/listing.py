"""`nnlab runs [DIR]`: every run directory under a folder with its status, main metric and age."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nnlab.errors import NnlabError
from nnlab.progress import format_seconds
from nnlab.runs.run import RUN_ENTRIES, Run, is_being_trained

STATUSES = ("finished", "interrupted", "failed", "training", "unreadable")


@dataclass
class RunStatus:
    path: Path
    status: str  # one of STATUSES
    epochs: int
    metric: str
    value: float | None
    age_seconds: float


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run directory as `Run.create` makes it (config.toml beside checkpoints/);
    a config.toml alone (a recipe copied into a project folder) is not."""
    return (path / "config.toml").is_file() and (path / "checkpoints").is_dir()


def run_status(path: Path) -> RunStatus:
    """What a run directory holds: finished, interrupted (can be resumed), failed (nothing to resume) or
    training (a live process holds it); "unreadable" when its config.toml no longer validates (written by
    another nnlab version) or its history or metrics are damaged."""
    newest = max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=path.stat().st_mtime)
    age = time.time() - newest
    try:
        run = Run.open(path)
        history = run.history()
        metric = run.config.eval.main_metric
        value = None
        if is_being_trained(path):
            status = "training"
        elif (path / "metrics.json").is_file():
            status = "finished"
            m = json.loads((path / "metrics.json").read_text())
            # test where it has the metric, else val: an embedding run's test split holds open-set
            # metrics only, and a run with keep_best = 0 is scored at its last epoch like any other
            value = next((m[s][metric] for s in ("test", "val") if isinstance(m.get(s), dict)
                          and isinstance(m[s].get(metric), (int, float))), None)
        else:
            status = "interrupted" if any(run.checkpoints.glob("last.*")) else "failed"
        if value is None and history:  # unfinished (or metrics.json without it): the last epoch's val
            value = history[-1].get(f"val_{metric}")
    except (NnlabError, ValueError, OSError, AttributeError):  # damaged files: one row says so, the rest list
        return RunStatus(path, "unreadable", 0, "-", None, age)
    return RunStatus(path, status, len(history), metric, value, age)


def list_runs(root: str | Path = "runs") -> list[RunStatus]:
    """Run directories anywhere under `root` (see `is_run_dir`), newest first."""
    root = Path(root)
    found = [run_status(c.parent) for c in sorted(root.rglob("config.toml")) if is_run_dir(c.parent)]
    return sorted(found, key=lambda r: r.age_seconds)


def format_runs(rows: list[RunStatus], root: Path) -> str:
    if not rows:
        return f"no run directories under {root}"
    width = max(len(str(r.path.relative_to(root) if r.path != root else r.path.name)) for r in rows)
    lines = [f"{'run':<{width}}  {'status':<11}  {'epochs':>6}  {'main metric':<22}  age"]
    for r in rows:
        name = str(r.path.relative_to(root)) if r.path != root else r.path.name
        score = f"{r.metric} {r.value:.4f}" if r.value is not None else "-"
        age = format_seconds(r.age_seconds)
        lines.append(f"{name:<{width}}  {r.status:<11}  {r.epochs:>6}  {score:<22}  {age} ago")
    return "\n".join(lines)


def removal_refused(path: Path) -> str | None:
    """Why a failed run directory must not be deleted, or None: it is the working directory or one of
    its parents, a process is training it, or it holds files that a run does not write."""
    here = Path.cwd().resolve()
    target = path.resolve()
    if target == here or target in here.parents:
        return "it is the working directory or a parent of it"
    if is_being_trained(path):
        return "a process is training it"
    foreign = sorted(p.name for p in path.iterdir() if p.name not in RUN_ENTRIES and not p.name.endswith(".tmp"))
    if foreign:
        return f"it holds files nnlab did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
    return None


def remove_failed(rows: list[RunStatus]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Delete the failed run directories (nothing to resume in them) that `removal_refused` allows;
    returns the paths removed and the (path, reason) of those kept."""
    gone, kept = [], []
    for r in rows:
        if r.status != "failed":
            continue
        reason = removal_refused(r.path)
        if reason is None:
            shutil.rmtree(r.path)
            gone.append(r.path)
        else:
            kept.append((r.path, reason))
    return gone, kept
