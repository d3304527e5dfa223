"""Running a study: every unfinished cell trained (or resumed) by the study's executor (a process pool,
or submitit's local, Slurm or debug jobs); a failing cell is recorded (error.txt) and the others go on."""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlab.config import flatten, validate
from nnlab.device import usable_cores
from nnlab.errors import NnlabError
from nnlab.ingest.idx import download_idx
from nnlab.progress import progress
from nnlab.runs.run import Run
from nnlab.studies.executors import Call, make_executor, submit_cells
from nnlab.studies.plan import ERROR_FILE, Cell, CellOutcome, Study, cell_state
from nnlab.studies.report import write_report
from nnlab.training import fit
from nnlab.training.tracking import child_runs_of, finish_parent, open_parent
from nnlab.training.throughput import say_once

# --------------------------------------------------------------------------- running


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


def _train_cell(config: dict[str, Any], path: str, resume: bool,
                tracking: dict[str, str] | None = None) -> dict[str, Any]:
    """Train or resume one cell (with `tracking`, the study's MLflow parent run, as its child run);
    never raises, so one failure cannot stop the others."""
    start, where = time.perf_counter(), Path(path)
    try:
        with child_runs_of(tracking):
            if resume:
                run = Run.open(where)
                fit(run.config, resume_run=run, echo=False)  # cells log to their train.log; the study shows one bar
            else:
                fit(validate(config, str(where)), out=where, echo=False)
        (where / ERROR_FILE).unlink(missing_ok=True)
        return {"ok": True, "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001  (reported per cell, with the traceback in error.txt)
        where.mkdir(parents=True, exist_ok=True)
        (where / ERROR_FILE).write_text(traceback.format_exc())
        message = str(exc) if isinstance(exc, NnlabError) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "seconds": time.perf_counter() - start, "error": message}


def _prefetch(cells: Sequence[Cell]) -> None:
    """Download official data once, before parallel cells could race on the same files."""
    seen = set()
    for c in cells:
        d = c.config.data
        if d.kind == "idx" and d.download and d.path and (d.path, d.dataset) not in seen:
            seen.add((d.path, d.dataset))
            download_idx(d.path, d.dataset or "mnist")


def run_study(study: Study, workers: int | None = None, executor: str | Executor | None = None) -> StudyOutcome:
    """Run the cells not finished yet, then write the report when the last one ends.

    `executor`: a name (`study.executor`: pool, local, slurm, debug; see `executors.py`) or any
    `concurrent.futures.Executor`, used as given and left open. `workers` (pool; default study.workers,
    else min(cells to run, cores)); each pool worker or local job gets max(1, cores // workers) torch threads.
    """
    start = time.perf_counter()
    states = {c: cell_state(c) for c in study.cells}
    todo = [c for c in study.cells if states[c] != "done"]
    outcomes = {c: CellOutcome(c, "done") for c in study.cells if states[c] == "done"}
    cores = usable_cores()
    kind = executor if isinstance(executor, str) or executor is None else "given"
    kind = kind or study.settings.executor
    if kind == "local":
        workers = max(1, len(todo))  # submitit's LocalExecutor starts every job at once
    elif kind == "slurm":
        workers = max(1, min(len(todo), study.settings.slurm.array_parallelism))
    else:
        workers = max(1, min(workers or study.settings.workers or cores, max(1, len(todo))))
    if todo:
        _prefetch(todo)  # before any folder: a failed download leaves no empty variant folders behind
    for c in todo:
        if states[c] == "new" and c.path.exists():
            shutil.rmtree(c.path)  # a cell that died before its first checkpoint starts again
        c.path.parent.mkdir(parents=True, exist_ok=True)

    bar = progress(total=len(study.cells), initial=len(outcomes), desc=f"study {study.name}", unit="cell")

    def record(cell: Cell, result: dict[str, Any]) -> None:
        status = ("resumed" if states[cell] == "resume" else "trained") if result["ok"] else "failed"
        outcomes[cell] = CellOutcome(cell, status, result["seconds"], result.get("error"))
        bar.update()
        bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes.values()))

    parent = open_parent(study.out, study.cells[0].config, study.name, _study_params(study)) if todo else None
    calls = [(_train_cell, (c.config.model_dump(mode="json", exclude_none=True), str(c.path), states[c] == "resume",
                            *([parent] if parent else []))) for c in todo]
    try:
        if todo:
            owned = not isinstance(executor, Executor)
            pool = make_executor(kind, study.out, study.name, study.settings.slurm, workers,
                                 max(1, cores // workers)) if owned else executor
            with say_once():  # cells in this process: a data-wait note once for the study, not once per cell
                _run_cells(pool, todo, calls, record, owned)
    finally:
        bar.close()
    ordered = [outcomes[c] for c in study.cells]
    report = write_report(study, ordered)
    metric = study.settings.metric
    finish_parent(parent, study.out, {f"{name}.{metric}_mean": row[f"{metric}_mean"]
                                      for name, row in report["variants"].items()},
                  failed=any(o.status == "failed" for o in ordered))
    return StudyOutcome(study, ordered, report, workers, time.perf_counter() - start)


def _study_params(study: Study) -> dict[str, Any]:
    """What a study's MLflow parent run records as params: its settings and each variant's overrides."""
    s = study.settings
    return {"study.seeds": s.seeds, "study.metric": s.metric, "study.executor": s.executor,
            "study.variants": ",".join(study.variants)} | flatten(study.variants, "grid.")


def _run_cells(executor: Executor, todo: list[Cell], calls: list[Call],
               record: Callable[[Cell, dict[str, Any]], None], owned: bool) -> None:
    """Submit every cell and record each as it ends; a job that dies (a killed worker process or
    submitit job) is recorded as a failed cell, which the next run of the study trains again."""
    pending: dict[Future, Cell] = {}
    try:
        pending = dict(zip(submit_cells(executor, calls), todo, strict=True))
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = {"ok": False, "seconds": 0.0,
                              "error": "its worker process died (out of memory or killed); re-run to retry"}
                except Exception as exc:  # noqa: BLE001  (a job without a result: the cell failed)
                    result = {"ok": False, "seconds": 0.0, "error": str(exc) if isinstance(exc, NnlabError)
                              else f"its job ended without a result ({type(exc).__name__}: {exc}); re-run to retry"}
                record(cell, result)
    except BaseException:
        if owned:
            executor.shutdown(wait=False, cancel_futures=True)
        raise
    if owned:
        executor.shutdown()
