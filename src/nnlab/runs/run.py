"""Run directories: one experiment's config, environment, history, metrics, checkpoints and plots.

    runs/<name>-<timestamp>/
      config.toml  env.json  history.csv  metrics.json  classes.txt
      checkpoints/last.pt, checkpoints/best-e<epoch from 1>-<metric>-<value>.pt
      plots/*.png  predictions/  train.log  tensorboard/ (train.tensorboard)
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlab.config import ExperimentConfig, load_config, save_config
from nnlab.fileio import atomic_write_text, read_classes, write_classes
from nnlab.errors import DataError, NnlabError
import torch
import numpy
from nnlab.version import __version__
import math
import timm

PATH_FIELDS = (("data", "path"), ("data", "test_path"), ("model", "weights"))


class Run:
    """A run directory on disk (created by `Run.create`, reopened by `Run.open`)."""

    def __init__(self, path: Path, config: ExperimentConfig) -> None:
        self.path = Path(path)
        self.config = config

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create(cls, cfg: ExperimentConfig, out: str | Path | None = None) -> Run:
        """Make `out` (default `runs/<name>-<timestamp>`), saving the resolved config with absolute paths."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{cfg.name}-{stamp}"
            suffix = 1
            while out.exists():
                suffix += 1
                out = Path("runs") / f"{cfg.name}-{stamp}-{suffix}"
        path = Path(out).resolve()
        if (path / "config.toml").exists():
            raise NnlabError(f"{path} already holds a run; use `nnlab resume {path}` or another --out")
        cfg = resolve_paths(cfg)
        for sub in ("checkpoints", "plots", "predictions"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        save_config(cfg, path / "config.toml")
        return cls(path, cfg)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        if not (path / "config.toml").is_file():
            raise NnlabError(f"{path}: not a run directory (no config.toml)")
        return cls(path, load_config(path / "config.toml"))

    # ----------------------------------------------------------------- files
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_text(self.path / name, json.dumps(data, indent=2, default=_jsonable) + "\n")

    def read_json(self, name: str) -> Any:
        file = self.path / name
        if not file.is_file():
            raise NnlabError(f"{self.path}: no {name} (has the run finished?)")
        return json.loads(file.read_text())

    def write_env(self, device: str, extra: dict[str, Any] | None = None) -> None:
        self.write_json("env.json", environment(device, self.config.seed) | (extra or {}))

    def write_classes(self, classes: list[str]) -> None:
        write_classes(self.path / "classes.txt", classes)

    def classes(self) -> list[str]:
        file = self.path / "classes.txt"
        if not file.is_file():
            raise NnlabError(f"{self.path}: no classes.txt")
        return read_classes(file)

    def append_history(self, row: dict[str, Any]) -> None:
        """Append one epoch; the header is written with the first row."""
        file = self.path / "history.csv"
        new = not file.exists()
        with file.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def history(self) -> list[dict[str, float]]:
        file = self.path / "history.csv"
        if not file.exists():
            return []
        with file.open(newline="") as fh:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]

    def truncate_history(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch` (written after the checkpoint a resume starts from)."""
        rows = [r for r in self.history() if r["epoch"] <= last_epoch]
        file = self.path / "history.csv"
        file.unlink(missing_ok=True)
        for r in rows:
            self.append_history({k: (int(v) if k == "epoch" else v) for k, v in r.items()})

    def best_checkpoint(self) -> Path:
        """The best checkpoint by the main metric, else the last one (.pt for torch, .npz for numpy)."""
        metas = [json.loads(p.read_text()) for p in self.checkpoints.glob("best-*.json")]
        metas = [m for m in metas if (self.checkpoints / m.get("file", "")).is_file()]
        if metas:
            sign = 1 if metas[0]["higher_is_better"] else -1
            return self.checkpoints / max(metas, key=lambda m: (sign * m["value"], m["epoch"]))["file"]
        for last in (self.checkpoints / "last.pt", self.checkpoints / "last.npz"):
            if last.exists():
                return last
        raise NnlabError(f"{self.path}: no checkpoint yet")


@dataclass
class BestCheckpoints:
    """The best k checkpoints by one metric, and the epochs since the last improvement (early stopping).

    Each kept checkpoint is `best-e<epoch>-<metric><value><suffix>` with a JSON beside it;
    one that drops out of the best k is deleted.
    """

    metric: str
    higher_is_better: bool
    keep: int
    best: list[dict[str, Any]] = field(default_factory=list)  # {"epoch", "value", "file"}, best first
    stale: int = 0

    def improved(self, value: float) -> bool:
        if not self.best:
            return True
        top = self.best[0]["value"]
        return value > top if self.higher_is_better else value < top

    def update(self, run: Run, epoch: int, value: float | None, save: Callable[[Path], Any] | None,
               suffix: str = ".pt") -> None:
        """Count the epoch for early stopping; when `value` makes the best k, call `save(path)`.

        `save=None` keeps the same ranking without touching files (DDP ranks other than 0)."""
        if value is None or not math.isfinite(value):
            self.stale += value is not None
            return
        self.stale = 0 if self.improved(value) else self.stale + 1
        if self.keep <= 0:
            return
        name = f"best-e{epoch + 1:03d}-{self.metric}-{value:.4f}{suffix}"  # epochs from 1, as in history.csv
        entry = {"epoch": epoch, "value": value, "file": name}
        sign = 1 if self.higher_is_better else -1
        ranked = sorted([*self.best, entry], key=lambda e: (-sign * e["value"], e["epoch"]))
        kept, dropped = ranked[:self.keep], ranked[self.keep:]
        self.best = kept
        if save is None:
            return
        if entry in kept:
            save(run.checkpoints / entry["file"])
            run.write_json(f"checkpoints/{Path(entry['file']).stem}.json",
                           entry | {"metric": self.metric, "higher_is_better": self.higher_is_better})
        for old in dropped:
            (run.checkpoints / old["file"]).unlink(missing_ok=True)
            (run.checkpoints / old["file"]).with_suffix(".json").unlink(missing_ok=True)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best, self.stale = list(state["best"]), int(state["stale"])


def resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of the config whose file paths are absolute (so a run can be resumed from anywhere).

    A relative path that does not exist is an error naming the directory it was resolved against
    (except an IDX folder that `data.download` will fill)."""
    cfg = cfg.model_copy(deep=True)
    for section, key in PATH_FIELDS:
        part = getattr(cfg, section)
        value = getattr(part, key)
        if value:
            path = Path(value).expanduser()
            will_download = section == "data" and cfg.data.download
            if not path.is_absolute() and not path.exists() and not will_download:
                raise DataError(f"{section}.{key}: {value} not found (a relative path is resolved against the "
                                f"current directory {Path.cwd()}; give an absolute path or run from elsewhere)")
            setattr(part, key, str(path.resolve()))
    return cfg


def atomic_save(obj: Any, path: Path) -> Path:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def environment(device: str, seed: int) -> dict[str, Any]:
    """Versions, device, seed and git commit: what a reader needs to repeat the run."""
    env = {"nnlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__, "platform": platform.platform(), "device": device, "seed": seed,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "git_commit": _git_commit()}
    try:
        env["timm"] = timm.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.startswith("cuda"):
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
