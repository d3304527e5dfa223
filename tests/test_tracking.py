"""MLflow tracking against a real SQLite store, read back through mlflow's own API: a run (params,
per-epoch metrics, artifacts, tags, a resumed session into the same MLflow run, an export) and a
2-cell study (one parent run, its cells as child runs). The one test module that imports mlflow."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from nnlab.config import load_config
from nnlab.errors import ConfigError
from nnlab.inference.models.export import export_onnx
from nnlab.runs.run import Run
from nnlab.studies.execute import run_study
from nnlab.studies.plan import plan_study
from nnlab.training import fit
from nnlab.training.tracking import TRACKING_FILE, log_export, resolve_uri

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=mlp", "model.hidden=[32]", "data.image_size=8", "train.epochs=2", "data.batch_size=256",
        'train.tracking="mlflow"']


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def test_a_run_logs_params_epoch_metrics_artifacts_and_tags(tmp_path, store, monkeypatch):
    monkeypatch.setenv("NNLAB_PLOTS", "1")
    cfg = load_config(ROOT / "recipes" / "digits-lenet.toml", [*TINY, f'train.tracking_uri="{store}"',
                                                                 'train.experiment="digits"'])
    out = tmp_path / "run"
    fit(cfg, out=out, stop_after_epoch=1, echo=False)  # interrupted after epoch 1 ...
    run_id = json.loads((out / TRACKING_FILE).read_text())["run_id"]
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"
    fit(Run.open(out).config, resume_run=Run.open(out), echo=False)  # ... and resumed: the same MLflow run

    mlflow.set_tracking_uri(store)
    [row] = mlflow.search_runs(experiment_names=["digits"]).to_dict("records")
    assert row["run_id"] == run_id and row["status"] == "FINISHED"
    assert row["params.model.name"] == "mlp" and row["params.train.epochs"] == "2"
    assert row["params.model.hidden"] == "[32]" and row["params.data.kind"] == "digits"
    assert row["tags.seed"] == "0" and row["tags.device"] == "cpu" and row["tags.run_dir"] == str(out)
    assert "tags.git_commit" in row
    history = list(csv.DictReader((out / "history.csv").open()))
    logged = client.get_metric_history(run_id, "val_accuracy")
    assert sorted((m.step, m.value) for m in logged) == [(int(r["epoch"]), float(r["val_accuracy"]))
                                                          for r in history]
    assert {m.step for m in client.get_metric_history(run_id, "train_loss")} == {1, 2}
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert row["metrics.final_test_accuracy"] == pytest.approx(test["accuracy"])
    assert {"metrics.json", "history.csv", "config.toml", "plots"} <= _artifacts(client, run_id)
    assert "plots/history.png" in _artifacts(client, run_id, "plots")

    log_export(Run.open(out), export_onnx(out, tmp_path / "export").out_dir)
    assert "export/model.onnx" in _artifacts(client, run_id, "export")


def test_a_study_logs_its_cells_as_child_runs_of_one_parent(tmp_path, store):
    study = plan_study(ROOT / "recipes" / "lenet-ablation-digits.toml", [*TINY, f'train.tracking_uri="{store}"'],
                       grid=["slow=optim.lr=0.001", "fast=optim.lr=0.01"], seeds=1, out=tmp_path / "s")
    outcome = run_study(study, workers=1)
    parent_id = json.loads((study.out / TRACKING_FILE).read_text())["run_id"]

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=[study.name]).to_dict("records")
    [parent] = [r for r in runs if r["run_id"] == parent_id]
    children = {r["tags.mlflow.runName"]: r for r in runs if r.get("tags.mlflow.parentRunId") == parent_id}
    assert len(runs) == 3 and parent["status"] == "FINISHED" and parent["params.study.variants"] == "slow,fast"
    assert set(children) == {f"{study.name}-slow-seed0", f"{study.name}-fast-seed0"}
    assert children[f"{study.name}-fast-seed0"]["params.optim.lr"] == "0.01"
    assert all(r["status"] == "FINISHED" for r in children.values())
    for name, variant in outcome.report["variants"].items():
        assert parent[f"metrics.{name}.accuracy_mean"] == pytest.approx(variant["accuracy_mean"])
    assert {"report.json", "report.md"} <= _artifacts(MlflowClient(store), parent_id)


def test_without_mlflow_a_tracked_run_stops_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if the mlflow extra were not installed
    cfg = load_config(ROOT / "recipes" / "digits-lenet.toml", TINY)
    with pytest.raises(ConfigError, match=r"pip install 'nnlab\[mlflow\]'"):
        fit(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert resolve_uri("sqlite:///runs/x.db") == f"sqlite:///{Path('runs/x.db').resolve()}"
