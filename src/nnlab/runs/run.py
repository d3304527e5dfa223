"""Run directories: one experiment's config, environment, history, metrics, checkpoints and plots.

    runs/<name>-<timestamp>/
      config.toml  env.json  history.csv  metrics.json  classes.txt
      checkpoints/last.pt, checkpoints/best-e<epoch from 1>-<metric>-<value>.pt
      plots/*.png  predictions/  train.log  tensorboard/ (train.tensorboard)
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

from nnlab.config import ExperimentConfig, load_config, save_config
from nnlab.errors import DataError, NnlabError
from nnlab.fileio import (atomic_write_text, disk_full_guard, kill_point, read_classes, temp_file_beside,
                          umask_mode, write_classes)
from nnlab.version import __version__

LOCK_FILE = ".lock"
RUN_ID = "run_id"  # env.json's key, and every checkpoint's, for the run that wrote it (`Run.id`)
#: What a run directory may hold: `nnlab runs --remove-failed` deletes a failed run only when it holds
#: nothing else (a file a user put there is never deleted).
RUN_ENTRIES = frozenset({"config.toml", "env.json", "history.csv", "metrics.json", "classes.txt", "splits.json",
                         "train.log", "averaged.json", "checkpoints", "plots", "predictions", "tensorboard", LOCK_FILE})
PATH_FIELDS = (("data", "path"), ("data", "test_path"), ("model", "weights"))


class Run:
    """A run directory on disk (created by `Run.create`, reopened by `Run.open`)."""

    def __init__(self, path: Path, config: ExperimentConfig) -> None:
        self.path = Path(path)
        self.config = config
        self._lock: int | None = None
        self._found: set[str] | None = None  # what `out` held before `create` (None: create made the folder)
        self._id: str | None = None

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
            raise NnlabError(f"{path} already holds a run; resume it (`nnlab resume {path}`, nnlab.resume), "
                             "replace it (nnlab.fit(..., overwrite=True)) or choose another output folder")
        cfg = resolve_paths(cfg)
        found = set(os.listdir(path)) if path.is_dir() else None
        run = cls(path, cfg)
        run._found = found
        try:
            for sub in ("checkpoints", "plots", "predictions"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            run.hold()
            save_config(cfg, path / "config.toml")
        except BaseException:  # a full disk, say: what create made goes (what was there before stays)
            run.discard()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        if not (path / "config.toml").is_file():
            raise NnlabError(f"{path}: not a run directory (no config.toml)")
        # lenient: runs written before the per-kind schema saved every kind's options
        return cls(path, load_config(path / "config.toml", lenient=True))

    # ----------------------------------------------------------------- the training lock
    def hold(self) -> None:
        """Mark the run as being trained by this process (an advisory lock on RUN/.lock, dropped by the
        kernel when the process dies), so that `nnlab runs --remove-failed` and a second trainer keep off."""
        if self._lock is not None:
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, umask_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NnlabError(f"{self.path}: another process is training this run; wait for it to end") from None
        self._lock = fd

    def release(self) -> None:
        """End `hold` (training is over)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def discard(self) -> None:
        """Remove what `create` and training wrote, for a run that failed before its first epoch: the whole
        folder when `create` made it, else only the entries that were not there before (a user's files stay)."""
        self.release()
        if self._found is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for entry in self.path.iterdir():
            if entry.name not in self._found:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

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
        """env.json: the environment of this session, and the run's id (made by the first session, kept after)."""
        run_id = self.id or uuid.uuid4().hex[:16]
        self.write_json("env.json", {RUN_ID: run_id} | environment(device, self.config.seed) | (extra or {}))
        self._id = run_id

    @property
    def id(self) -> str | None:
        """The identity of this run (env.json's run_id), which its checkpoints carry, so that one run's files
        are never taken for another's (`nnlab average`); None for a run written before ids, or not started."""
        if self._id is None:
            try:
                self._id = json.loads((self.path / "env.json").read_text(encoding="utf-8")).get(RUN_ID)
            except (OSError, ValueError, AttributeError):
                self._id = None
        return self._id

    def write_classes(self, classes: list[str]) -> None:
        write_classes(self.path / "classes.txt", classes)

    def classes(self) -> list[str]:
        file = self.path / "classes.txt"
        if not file.is_file():
            raise NnlabError(f"{self.path}: no classes.txt")
        return read_classes(file)

    def append_history(self, row: dict[str, Any]) -> None:
        """Append one epoch (the header is written with the first row); the file is rewritten
        atomically, so that a kill never leaves half a row."""
        file = self.path / "history.csv"
        text = file.read_text(encoding="utf-8") if file.exists() else ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(row))
        if not text:
            writer.writeheader()
        writer.writerow(row)
        atomic_write_text(file, text + buf.getvalue())
        kill_point("history-appended")

    def remove_partial_files(self) -> list[Path]:
        """Delete the `*.tmp` files a killed process left while writing (checkpoints, JSON, history)."""
        partial = [p for folder in (self.path, self.checkpoints) for p in folder.glob("*.tmp") if p.is_file()]
        for p in partial:
            p.unlink(missing_ok=True)
        return partial

    def history(self) -> list[dict[str, float]]:
        file = self.path / "history.csv"
        if not file.exists():
            return []
        with file.open(newline="") as fh:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]

    def truncate_history(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch` (written after the checkpoint a resume starts from), and
        any row a kill cut short; the rows kept are kept as written, and the file is replaced atomically.
        train.log loses the same epochs' lines (training writes them again)."""
        self._truncate_log(last_epoch)
        file = self.path / "history.csv"
        if not file.exists():
            return
        with file.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        header, kept = rows[0], [rows[0]]
        for r in rows[1:]:
            if len(r) != len(header):
                break
            try:
                if int(float(r[header.index("epoch")])) > last_epoch:
                    break
            except ValueError:
                break
            kept.append(r)
        buf = io.StringIO()
        csv.writer(buf).writerows(kept)
        atomic_write_text(file, buf.getvalue())

    def _truncate_log(self, last_epoch: int) -> None:
        file = self.path / "train.log"
        if not file.is_file():
            return
        text = file.read_text(encoding="utf-8", errors="replace")
        kept = [line for line in text.splitlines(keepends=True) if line.endswith("\n") and
                not ((m := re.match(r"epoch (\d+)/", line)) and int(m.group(1)) > last_epoch)]
        if "".join(kept) != text:
            atomic_write_text(file, "".join(kept))

    def _best_meta(self, path: Path) -> dict[str, Any] | None:
        """A best-*.json; None when unreadable. Its "file" must name a file of the checkpoints folder."""
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            file, value = str(meta["file"]), float(meta["value"])
            epoch, higher = int(meta["epoch"]), bool(meta["higher_is_better"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if Path(file).name != file or file in ("", ".", ".."):
            raise NnlabError(f"{path}: \"file\" is {file!r}, outside the run's checkpoints folder; refused "
                             "(delete this file if you did not write it)")
        return meta | {"value": value, "epoch": epoch, "higher_is_better": higher}

    def best_metas(self) -> list[dict[str, Any]]:
        """The kept best checkpoints' records (file, epoch, value, higher_is_better) whose JSON is readable
        and whose checkpoint exists; a damaged record is left out, never a traceback."""
        metas = [self._best_meta(p) for p in sorted(self.checkpoints.glob("best-*.json"))]
        return [m for m in metas if m is not None and (self.checkpoints / m["file"]).is_file()]

    def best_checkpoint(self) -> Path:
        """The best checkpoint by the main metric, else the last one (.pt for torch, .npz for numpy)."""
        metas = self.best_metas()
        if metas:
            sign = 1 if metas[0]["higher_is_better"] else -1
            return self.checkpoints / max(metas, key=lambda m: (sign * m["value"], m["epoch"]))["file"]
        # last.pt / last.npz: a run without a val metric; averaged.pt: an `nnlab average` run
        for last in (self.checkpoints / "last.pt", self.checkpoints / "last.npz", self.checkpoints / "averaged.pt"):
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
    top: float | None = None  # the best value so far, kept checkpoint or not (keep = 0 keeps none)

    def improved(self, value: float) -> bool:
        if self.top is None:
            return True
        return value > self.top if self.higher_is_better else value < self.top

    def update(self, run: Run, epoch: int, value: float | None, save: Callable[[Path], Any] | None,
               suffix: str = ".pt") -> None:
        """Count the epoch for early stopping; when `value` makes the best k, call `save(path)`.

        `save=None` keeps the same ranking without touching files (DDP ranks other than 0)."""
        if value is None or not math.isfinite(value):
            self.stale += value is not None
            return
        if self.improved(value):
            self.stale, self.top = 0, value
        else:
            self.stale += 1
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
            kill_point("best-saved")
            run.write_json(f"checkpoints/{Path(entry['file']).stem}.json",
                           entry | {"metric": self.metric, "higher_is_better": self.higher_is_better})
        for old in dropped:
            (run.checkpoints / old["file"]).unlink(missing_ok=True)
            (run.checkpoints / old["file"]).with_suffix(".json").unlink(missing_ok=True)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale, "top": self.top}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best, self.stale = list(state["best"]), int(state["stale"])
        # checkpoints of earlier versions kept no "top": their best kept checkpoint's value was it
        self.top = state.get("top", self.best[0]["value"] if self.best else None)


def resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of the config whose file paths are absolute (so a run can be resumed from anywhere).

    A relative path that does not exist is an error naming the directory it was resolved against
    (except an IDX folder that `data.download` will fill)."""
    cfg = cfg.model_copy(deep=True)
    for section, key in PATH_FIELDS:
        part = getattr(cfg, section)
        value = getattr(part, key, None)  # digits and synth have no path, only csv a test_path
        if value:
            path = Path(value).expanduser()
            will_download = section == "data" and getattr(cfg.data, "download", False)
            if not path.is_absolute() and not path.exists() and not will_download:
                raise DataError(f"{section}.{key}: {value} not found (a relative path is resolved against the "
                                f"current directory {Path.cwd()}; give an absolute path or run from elsewhere)")
            setattr(part, key, str(path.resolve()))
    return cfg


def check_inputs_exist(cfg: ExperimentConfig, where: str) -> None:
    """The files a saved run reads again (its data, its starting weights) still exist: one DataError
    naming the first that is gone (`nnlab resume` asks before it changes anything)."""
    for section, key in PATH_FIELDS:
        value = getattr(getattr(cfg, section), key, None)
        if value and not Path(value).exists() and not (section == "data" and getattr(cfg.data, "download", False)):
            raise DataError(f"{where}: {section}.{key} = {value} no longer exists; put it back (or edit "
                            f"{section}.{key} in config.toml) and resume again; nothing was changed")


def remove_run(path: Path) -> None:
    """Remove the run at `path` so that a new one can take its place (`nnlab.fit(..., overwrite=True)`):
    only a folder holding config.toml and nothing another process is training; an absent folder is fine."""
    path = Path(path)
    if not path.exists():
        return
    if not (path / "config.toml").is_file():
        if path.is_dir() and not any(path.iterdir()):
            return
        raise NnlabError(f"{path}: overwrite: not a run directory (no config.toml); nothing was removed")
    if is_being_trained(path):
        raise NnlabError(f"{path}: overwrite: another process is training this run; nothing was removed")
    shutil.rmtree(path)


def is_being_trained(path: Path) -> bool:
    """Whether a live process holds the run's training lock (see `Run.hold`)."""
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


def atomic_save(obj: Any, path: Path) -> Path:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    import torch  # heavy: only writing a checkpoint needs it; `nnlab runs`, `report`, `compare` run without

    fd, tmp = temp_file_beside(path)
    os.close(fd)
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
    try:
        with disk_full_guard(path, Path(tmp), kept=kept + " (then `nnlab resume` the run)"):
            torch.save(obj, tmp)
            kill_point("checkpoint-tmp-written")
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def environment(device: str, seed: int) -> dict[str, Any]:
    """Versions, device, seed and git commit: what a reader needs to repeat the run."""
    import torch  # heavy: only a starting run needs it; `nnlab runs`, `report`, `compare` run without

    env = {"nnlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__, "platform": platform.platform(), "device": device, "seed": seed,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "git_commit": _git_commit()}
    try:  # from the installed metadata: importing timm costs seconds, and a LeNet run never needs it
        env["timm"] = metadata.version("timm")
    except metadata.PackageNotFoundError:  # pragma: no cover
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
