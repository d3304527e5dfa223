"""Experiment tracking with MLflow (`train.tracking = "mlflow"`), offline: no server, a SQLite store.

A tracked run logs its resolved config as params (dotted keys), tags (seed, git commit, device, engine,
run directory), every history row as metrics with step = epoch while it trains, and at the end the
final val/test metrics, metrics.json, history.csv, config.toml, the plots and any ONNX file under the run
directory as artifacts. RUN/mlflow.json keeps the store and the MLflow run id, so a resumed run goes on
logging into the same MLflow run. A study opens one parent run (STUDY/mlflow.json) and its cells become
child runs (`mlflow.parentRunId`), in whatever process or job trains them.

    tracker_for(run)            -> Tracker | None   (the epoch bookkeeping calls on_epoch_end per row)
    finish_run(run, status)                         (fit: FINISHED with the artifacts, or FAILED)
    open_parent(folder, ...)    -> dict | None      (a study's parent run; `with child_runs_of(parent)` per cell)

mlflow is imported inside functions: an optional dependency (the mlflow extra) that takes seconds to load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from nnlab.config import ExperimentConfig, flatten
from nnlab.errors import ConfigError
from nnlab.fileio import atomic_write_text
from nnlab.runs.run import Run

TRACKING_FILE = "mlflow.json"
DEFAULT_STORE = Path("runs") / "mlflow.db"  # under the current directory, beside the runs `nnlab run` makes
PARAM_LIMIT = 6000  # the longest parameter value MLflow stores
# The study's parent run, set around each of its cells: {"uri", "experiment_id", "run_id"}.
_PARENT: ContextVar[dict[str, str] | None] = ContextVar("nnlab_tracking_parent", default=None)


def _client_class() -> Any:
    try:
        from mlflow.tracking import MlflowClient  # optional, slow to import (the mlflow extra)
    except ImportError:
        raise ConfigError("train.tracking = 'mlflow' needs MLflow: pip install 'nnlab[mlflow]'") from None
    return MlflowClient


def _client(uri: str) -> Any:
    client_class = _client_class()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's schema migrations, once per new file
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return client_class(tracking_uri=uri)


def resolve_uri(uri: str | None) -> str:
    """The store a run or study uses: the given URI (a relative SQLite path made absolute, so that a resume
    from elsewhere finds it) or the default."""
    if uri is None:
        return default_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def default_uri() -> str:
    """sqlite:///<cwd>/runs/mlflow.db (`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` from here)."""
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE).resolve()}"


def _experiment_id(client: Any, uri: str, name: str) -> str:
    """The experiment's id, created if new; a SQLite store keeps artifacts beside it (mlartifacts/)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001  (another process created it first)
        return client.get_experiment_by_name(name).experiment_id


def _params(cfg: ExperimentConfig) -> dict[str, str]:
    flat = flatten(cfg.model_dump(mode="json", exclude_none=True))
    return {k: str(v)[:PARAM_LIMIT] for k, v in flat.items()}


def _numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _key(name: str) -> str:
    """A metric or param name as MLflow admits it (letters, digits, _ - . space : /): a variant may hold '+'."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _log(client: Any, run_id: str, metrics: Mapping[str, float] = (), step: int = 0,
         params: Mapping[str, str] = (), tags: Mapping[str, str] = ()) -> None:
    from mlflow.entities import Metric, Param, RunTag  # optional (the mlflow extra), loaded with the client

    stamp = int(time.time() * 1000)
    metrics = {_key(k): v for k, v in dict(metrics).items()}
    params, tags = [(_key(k), v) for k, v in dict(params).items()], dict(tags)
    if metrics or tags:
        client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()],
                         tags=[RunTag(k, str(v)) for k, v in tags.items()])
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=[Param(k, v) for k, v in params[i:i + 100]])


@contextlib.contextmanager
def child_runs_of(parent: dict[str, str] | None) -> Iterator[None]:
    """Within: a tracked run that starts becomes a child run of `parent` (in its store and experiment)."""
    token = _PARENT.set(parent)
    try:
        yield
    finally:
        _PARENT.reset(token)


class Tracker:
    """One run's MLflow run: created when the run starts, reopened when it resumes."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.warned = False

    @classmethod
    def open(cls, run: Run) -> Tracker:
        file = run.path / TRACKING_FILE
        if file.is_file():
            saved = json.loads(file.read_text())
            tracker = cls(_client(saved["uri"]), saved["run_id"])
            tracker.client.update_run(tracker.run_id, status="RUNNING")
            return tracker
        cfg, parent = run.config, _PARENT.get()
        uri = parent["uri"] if parent else resolve_uri(cfg.train.tracking_uri)
        client = _client(uri)
        experiment = (parent["experiment_id"] if parent
                      else _experiment_id(client, uri, cfg.train.experiment or cfg.name))
        env = json.loads((run.path / "env.json").read_text()) if (run.path / "env.json").is_file() else {}
        tags = {"seed": cfg.seed, "engine": cfg.engine, "model": cfg.model.name, "run_dir": str(run.path),
                "device": env.get("device"), "git_commit": env.get("git_commit"), "nnlab": env.get("nnlab")}
        if parent:
            tags["mlflow.parentRunId"] = parent["run_id"]
        created = client.create_run(experiment, run_name=run.path.name if not parent else cfg.name,
                                    tags={k: str(v) for k, v in tags.items() if v is not None})
        tracker = cls(client, created.info.run_id)
        _log(client, tracker.run_id, params=_params(cfg))
        atomic_write_text(file, json.dumps({"uri": uri, "experiment_id": experiment, "run_id": tracker.run_id}) + "\n")
        return tracker

    def on_epoch_end(self, row: Mapping[str, Any]) -> None:
        """Every number of the history row, at step = epoch (a store that fails is a warning: training goes on)."""
        try:
            _log(self.client, self.run_id, _numbers({k: v for k, v in row.items() if k != "epoch"}),
                 step=int(row["epoch"]))
        except Exception as exc:  # noqa: BLE001  (a busy or unreachable store must not end a long training)
            if not self.warned:
                print(f"warning: MLflow did not take epoch {int(row['epoch'])}'s metrics ({type(exc).__name__}: "
                      f"{exc}); training goes on, history.csv has them", file=sys.stderr, flush=True)
            self.warned = True

    def on_fit_end(self, run: Run) -> None:
        """The final val/test metrics, the run's files as artifacts, and the run marked finished."""
        metrics = json.loads((run.path / "metrics.json").read_text())
        final = {**_numbers(metrics.get("val", {}), "final_val_"), **_numbers(metrics.get("test", {}), "final_test_")}
        _log(self.client, self.run_id, final, step=int(metrics.get("epochs", 0)))
        log_artifacts(self.client, self.run_id, run.path)
        self.client.set_terminated(self.run_id, status="FINISHED")


def log_artifacts(client: Any, run_id: str, folder: Path, onnx: bool = True) -> None:
    """metrics.json, history.csv, config.toml (a study's report), plots/*.png and with `onnx` any *.onnx
    under the folder (an export kept in the run)."""
    for name in ("metrics.json", "history.csv", "config.toml", "report.json", "report.md"):
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name))
    for png in sorted((folder / "plots").glob("*.png")):
        client.log_artifact(run_id, str(png), "plots")
    for model in sorted(folder.rglob("*.onnx")) if onnx else ():
        client.log_artifact(run_id, str(model), str(Path("onnx") / model.parent.relative_to(folder)))


def check_tracking(cfg: ExperimentConfig) -> None:
    """Before a run starts: the tracker its config asks for can be loaded (one line naming the extra)."""
    if cfg.train.tracking == "mlflow":
        _client_class()


def tracker_for(run: Run) -> Tracker | None:
    """The run's tracker when its config asks for one (train.tracking), else None."""
    return Tracker.open(run) if run.config.train.tracking == "mlflow" else None


def finish_run(run: Run, status: str = "FINISHED") -> None:
    """At the end of fit: a finished run logs its results; a failed one is marked FAILED (a run that
    has not opened its MLflow run yet has nothing to mark)."""
    file = run.path / TRACKING_FILE
    if run.config.train.tracking != "mlflow" or not file.is_file():
        return
    saved = json.loads(file.read_text())
    tracker = Tracker(_client(saved["uri"]), saved["run_id"])
    if status == "FINISHED" and (run.path / "metrics.json").is_file():
        tracker.on_fit_end(run)
    elif status != "FINISHED":
        tracker.client.set_terminated(tracker.run_id, status=status)


def log_export(run: Run, export_dir: str | Path) -> None:
    """Log an `nnlab export` folder (model.onnx and what serves it) as artifacts of the run's MLflow run."""
    file = run.path / TRACKING_FILE
    if not file.is_file():
        return
    saved = json.loads(file.read_text())
    client = _client(saved["uri"])
    for path in sorted(Path(export_dir).iterdir()):
        if path.is_file():
            client.log_artifact(saved["run_id"], str(path), "export")


def open_parent(folder: Path, cfg: ExperimentConfig, name: str, params: Mapping[str, Any]) -> dict[str, str] | None:
    """A study's parent run (reopened from folder/mlflow.json on a rerun), when its cells are tracked:
    {"uri", "experiment_id", "run_id"} for `child_runs_of`; None when they are not."""
    if cfg.train.tracking != "mlflow":
        return None
    file = folder / TRACKING_FILE
    if file.is_file():
        parent = json.loads(file.read_text())
        _client(parent["uri"]).update_run(parent["run_id"], status="RUNNING")
        return parent
    uri = resolve_uri(cfg.train.tracking_uri)
    client = _client(uri)
    experiment = _experiment_id(client, uri, cfg.train.experiment or name)
    created = client.create_run(experiment, run_name=name, tags={"nnlab.study": name, "study_dir": str(folder)})
    _log(client, created.info.run_id, params={k: str(v)[:PARAM_LIMIT] for k, v in params.items()})
    parent = {"uri": uri, "experiment_id": experiment, "run_id": created.info.run_id}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(parent) + "\n")
    return parent


def finish_parent(parent: dict[str, str] | None, folder: Path, metrics: Mapping[str, float], failed: bool) -> None:
    """The study's report as artifacts and its variants' means as metrics; FAILED while a cell failed."""
    if parent is None:
        return
    client = _client(parent["uri"])
    _log(client, parent["run_id"], _numbers(metrics))
    log_artifacts(client, parent["run_id"], folder, onnx=False)  # the cells log their own
    client.set_terminated(parent["run_id"], status="FAILED" if failed else "FINISHED")
