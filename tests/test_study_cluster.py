"""Studies through submitit: real LocalExecutor jobs (subprocesses started by submitit's own machinery),
the DebugExecutor, a killed cell's job that the next run resumes, and the script sbatch receives."""

from __future__ import annotations

import json
import os
import signal
import sys
from concurrent.futures import Executor
from pathlib import Path

import cloudpickle
import pytest

from nnlab.config import SlurmConfig, validate
from nnlab.errors import NnlabError
from nnlab.studies import executors
from nnlab.studies.execute import run_study
from nnlab.studies.executors import JOBS_FOLDER, make_executor, sbatch_script
from nnlab.studies.plan import cell_state, plan_study
from nnlab.training import fit

ROOT = Path(__file__).resolve().parents[1]
DIGITS_RECIPE = ROOT / "recipes" / "lenet-ablation-digits.toml"
# Two tiny cells: an MLP on 8x8 digits for 2 epochs, one torch thread (so every process computes the same bits).
TINY = ["model.name=mlp", "model.hidden=[32]", "data.image_size=8", "train.epochs=2", "data.batch_size=256",
        "train.threads=1"]
GRID = ["slow=optim.lr=0.001", "fast=optim.lr=0.01"]
TIMED = {"train_seconds", "images_per_second", "status", "error", "plots"}

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs unpickle this module's functions


def _killed_after_one_epoch(config: dict, path: str, resume: bool, *_tracking) -> dict:
    """A cell whose job is killed (SIGKILL, nothing cleaned up) once its first epoch is checkpointed."""
    fit(validate(config, path), out=Path(path), stop_after_epoch=1, echo=False)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


class KillOneCell(Executor):
    """The injected executor seam: submitit's jobs, with the `victim` cell's job killed midway."""

    def __init__(self, inner: Executor, victim: str) -> None:
        self.inner, self.victim = inner, victim

    def submit_many(self, calls):
        return self.inner.submit_many([(_killed_after_one_epoch, args) if args[1].endswith(self.victim)
                                       else (fn, args) for fn, args in calls])


def _timeless(report: dict) -> dict:
    """report.json without what depends on the clock or on how the cell ended (trained, resumed)."""
    if isinstance(report, dict):
        return {k: _timeless(v) for k, v in report.items() if k not in TIMED}
    if isinstance(report, list):
        return [_timeless(v) for v in report]
    return report


def test_a_killed_local_job_is_resubmitted_and_the_report_equals_an_uninterrupted_one(tmp_path):
    reference = run_study(plan_study(DIGITS_RECIPE, TINY, grid=GRID, seeds=1, out=tmp_path / "ref"), workers=1)

    study = plan_study(DIGITS_RECIPE, TINY, grid=GRID, seeds=1, out=tmp_path / "s", executor="local")
    local = make_executor("local", study.out, study.name, study.settings.slurm, 2, 1)
    try:
        first = run_study(study, executor=KillOneCell(local, "fast/seed0"))
    finally:
        local.shutdown()
    assert {c.cell.variant: c.status for c in first.cells} == {"slow": "trained", "fast": "failed"}
    [failed] = first.failed
    assert "ended without a result" in failed.error and JOBS_FOLDER in failed.error
    assert cell_state(failed.cell) == "resume"  # its epoch-1 checkpoint is on disk
    logs = sorted(p.name for p in (study.out / JOBS_FOLDER).glob("*_log.out"))
    assert len(logs) == 2  # one submitit job per cell
    assert json.loads((study.out / "report.json").read_text())["cells_finished"] == 1

    # `nnlab study` again: only the killed cell runs (resumed from epoch 1), here with the DebugExecutor
    again = run_study(plan_study(DIGITS_RECIPE, TINY, grid=GRID, seeds=1, out=tmp_path / "s", executor="debug"))
    assert {c.cell.variant: c.status for c in again.cells} == {"slow": "done", "fast": "resumed"}
    history = (failed.cell.path / "history.csv").read_text().splitlines()
    assert len(history) == 3  # epoch 1 from the killed job, epoch 2 now
    report = json.loads((study.out / "report.json").read_text())
    assert report["cells_finished"] == 2
    uninterrupted = json.loads((reference.study.out / "report.json").read_text())
    assert _timeless(report) == _timeless(uninterrupted)
    assert report["variants"]["fast"]["accuracy_values"] == uninterrupted["variants"]["fast"]["accuracy_values"]
    assert report["curves"] == uninterrupted["curves"]  # every epoch's val accuracy, bit for bit


def test_a_job_near_its_time_limit_is_requeued_to_resume_its_cell(tmp_path, monkeypatch):
    """What submitit's signal handler asks of a cell's job before requeueing it (Slurm's USR2)."""
    cell = tmp_path / "cell"
    (cell / "checkpoints").mkdir(parents=True)
    (cell / "config.toml").write_text("")  # started, no checkpoint yet
    job = executors.CellJob(run_study, threads=1)
    again = job.checkpoint({"seed": 0}, str(cell), False, {"run_id": "p"})
    assert again.args == ({"seed": 0}, str(cell), False, {"run_id": "p"}) and again.function.fresh
    (cell / "checkpoints" / "last.pt").write_bytes(b"")  # after its first epoch
    again = job.checkpoint({"seed": 0}, str(cell), False)
    assert again.args[2] is True and not again.function.fresh and again.function.fn is run_study

    monkeypatch.setattr(executors, "init_worker", lambda threads: None)  # keep this process's threads
    seen = []
    executors.CellJob(lambda config, path, resume: seen.append((Path(path).exists(), resume)), fresh=True)(
        {}, str(cell), False)
    assert seen == [(False, False)]  # the folder the interrupted job left is cleared first


def test_sbatch_receives_one_job_array_with_the_study_slurm_settings(tmp_path, cli):
    settings = ['study.slurm.partition="gpu"', "study.slurm.time=30", "study.slurm.gpus_per_cell=1",
                "study.slurm.array_parallelism=4", "study.slurm.setup=['source ~/venv/bin/activate']"]
    sets = [arg for s in settings for arg in ("--set", s)]
    script = cli("study", DIGITS_RECIPE, "--executor", "slurm", "--show-sbatch", *sets, "--out", tmp_path / "s").stdout
    print(script)  # what README shows
    folder = (tmp_path / "s").resolve() / JOBS_FOLDER
    assert script.startswith("#!/bin/bash") and not (tmp_path / "s").exists()  # shown, nothing run or written
    for line in ("#SBATCH --array=0-17%4", "#SBATCH --partition=gpu", "#SBATCH --time=30",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --job-name=nnlab-lenet-ablation-digits", f"#SBATCH --output={folder}/%A_%a_0_log.out",
                 "source ~/venv/bin/activate"):
        assert line in script.splitlines(), line
    assert f"-m submitit.core._submit {folder}" in script and "srun" in script
    study = plan_study(DIGITS_RECIPE, settings, out=tmp_path / "s")  # the function behind it
    assert sbatch_script(study.settings.slurm, study.name, study.out, 18) == script


def test_executor_errors_are_one_line(tmp_path, monkeypatch, cli):
    with pytest.raises(NnlabError, match="srun"):  # this machine has no Slurm
        make_executor("slurm", tmp_path, "x", SlurmConfig(), 1, 1)
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the cluster extra were not installed
    with pytest.raises(NnlabError, match=r"pip install 'nnlab\[cluster\]'"):
        make_executor("local", tmp_path, "x", SlurmConfig(), 1, 1)
    result = cli("study", DIGITS_RECIPE, "--executor", "lsf", "--out", tmp_path / "s", ok=False)
    assert result.returncode == 2 and "--executor 'lsf': expected one of pool, local, slurm, debug" in result.stderr
