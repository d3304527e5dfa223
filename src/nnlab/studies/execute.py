"""Running a study: every unfinished cell trained (or resumed) in parallel processes; a failing cell
is recorded (error.txt) and the others go on."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from nnlab.config import validate
from nnlab.errors import NnlabError
from nnlab.ingest.idx import download_idx
from nnlab.progress import progress
from nnlab.runs.run import Run
from nnlab.studies.plan import ERROR_FILE, Cell, CellOutcome, Study, cell_state
from nnlab.studies.report import write_report
from nnlab.training import fit
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


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (macOS, Windows)
        return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    """Each worker process: its share of the cores, and no per-epoch bars (one bar over cells)."""
    os.environ["NNLAB_PROGRESS"] = "0"
    say_once().__enter__()  # this worker's cells say a data-wait note once, for the worker's life
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # BLAS, for NumPy-engine cells (a cell's own train.threads still wins)


def _train_cell(config: dict[str, Any], path: str, resume: bool) -> dict[str, Any]:
    """Train or resume one cell; never raises, so one failure cannot stop the others."""
    start, where = time.perf_counter(), Path(path)
    try:
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


def run_study(study: Study, workers: int | None = None) -> StudyOutcome:
    """Run the cells not finished yet (in parallel processes when there are cores), then write the report.

    `workers` (default: study.workers, else min(cells to run, cores)); each worker process gets
    max(1, cores // workers) torch threads.
    """
    start = time.perf_counter()
    states = {c: cell_state(c) for c in study.cells}
    todo = [c for c in study.cells if states[c] != "done"]
    outcomes = {c: CellOutcome(c, "done") for c in study.cells if states[c] == "done"}
    cores = available_cores()
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

    tasks = {c: (c.config.model_dump(mode="json", exclude_none=True), str(c.path), states[c] == "resume")
             for c in todo}
    try:
        if workers == 1:  # in this process: no start-up cost, and tracebacks stay simple
            with say_once():  # a data-wait note once for the study, not once per cell
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
