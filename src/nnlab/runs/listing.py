"""`nnlab runs [DIR]`: every run directory under a folder with its status, main metric and age."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nnlab.errors import NnlabError
from nnlab.progress import format_seconds
from nnlab.runs.run import Run

STATUSES = ("finished", "interrupted", "failed", "unreadable")


@dataclass
class RunStatus:
    path: Path
    status: str  # one of STATUSES
    epochs: int
    metric: str
    value: float | None
    age_seconds: float


def run_status(path: Path) -> RunStatus:
    """What a run directory holds: finished, interrupted (can be resumed) or failed (nothing to resume);
    "unreadable" when its config.toml no longer validates (written by another nnlab version)."""
    newest = max(p.stat().st_mtime for p in path.rglob("*") if p.is_file())
    try:
        run = Run.open(path)
    except NnlabError:
        return RunStatus(path, "unreadable", 0, "-", None, time.time() - newest)
    history = run.history()
    metric = run.config.eval.main_metric
    value = None
    if (path / "metrics.json").is_file():
        status = "finished"
        m = json.loads((path / "metrics.json").read_text())
        value = m.get("test" if "test" in m else "val", {}).get(metric)
    else:
        status = "interrupted" if any(run.checkpoints.glob("last.*")) else "failed"
        if history:
            value = history[-1].get(f"val_{metric}")
    return RunStatus(path, status, len(history), metric, value, time.time() - newest)


def list_runs(root: str | Path = "runs") -> list[RunStatus]:
    """Run directories (a config.toml inside) anywhere under `root`, newest first."""
    root = Path(root)
    found = [run_status(c.parent) for c in sorted(root.rglob("config.toml"))]
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


def remove_failed(rows: list[RunStatus]) -> list[Path]:
    """Delete the failed run directories (nothing to resume in them); returns their paths."""
    gone = [r.path for r in rows if r.status == "failed"]
    for path in gone:
        shutil.rmtree(path)
    return gone
