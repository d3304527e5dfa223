"""Where a study's cells run: the seam between `run_study` and an engine.

An executor is anything with `submit(fn, *args) -> concurrent.futures.Future` (a
`concurrent.futures.Executor`); `submit_cells` submits a list of calls, as one job array when the
executor has `submit_many` (submitit's Slurm arrays). The ones `study.executor` names:

    pool    a process pool on this machine (the default; one worker: in this process)
    local   submitit's LocalExecutor: one subprocess job per cell, through submitit's own machinery
    slurm   submitit's SlurmExecutor: one Slurm job per cell, submitted as one job array
    debug   submitit's DebugExecutor: the cells one after another in this process (breakpoints, profilers)

submitit's job folders are under STUDY/.submitit/; the cells write their run directories into the
shared study folder as they do in the pool, so a rerun resumes any of them alike.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from nnlab.config import EXECUTORS, SlurmConfig
from nnlab.errors import NnlabError
from nnlab.studies.plan import resumable

JOBS_FOLDER = ".submitit"  # under the study folder
POLL_SECONDS = 0.5  # how often a finished local/Slurm job is looked for (submitit caches Slurm's state itself)
Call = tuple[Callable[..., Any], tuple[Any, ...]]


def init_worker(threads: int | None = None) -> None:
    """A process that trains cells: its share of the cores (default: the cores it may use, as a Slurm
    job's allocation), and no per-epoch bars (the study shows one bar over cells)."""
    import torch  # heavy: only in the processes that train
    from threadpoolctl import threadpool_limits  # with torch: only in the processes that train

    from nnlab.device import usable_cores  # with torch: only in the processes that train
    from nnlab.training.throughput import say_once  # with torch: only in the processes that train

    threads = threads or usable_cores()
    os.environ["NNLAB_PROGRESS"] = "0"
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # BLAS, for NumPy-engine cells (a cell's own train.threads still wins)
    say_once().__enter__()  # this process's cells say a data-wait note once, for the process's life


class CellJob:
    """What a submitit job runs: the worker set-up, then the cell `fn(config, path, resume, ...)`.

    On Slurm's signal before the time limit or a preemption, submitit calls `checkpoint` and requeues
    the job (at most 3 time-outs): the requeued job resumes the cell from its last epoch, or starts it
    again from a clean folder when it had none yet."""

    def __init__(self, fn: Callable[..., Any], threads: int | None = None, fresh: bool = False) -> None:
        self.fn, self.threads, self.fresh = fn, threads, fresh

    def __call__(self, config: dict[str, Any], path: str, resume: bool, *rest: Any) -> Any:
        init_worker(self.threads)
        if self.fresh:
            shutil.rmtree(path, ignore_errors=True)  # what the interrupted job left before its first checkpoint
        return self.fn(config, path, resume, *rest)

    def checkpoint(self, config: dict[str, Any], path: str, resume: bool, *rest: Any) -> Any:
        from submitit.helpers import DelayedSubmission  # optional (the cluster extra): only inside a job

        again = resumable(Path(path))
        return DelayedSubmission(CellJob(self.fn, self.threads, fresh=not again), config, path, again, *rest)


class InlineExecutor(Executor):
    """Runs each call in this process when it is submitted (one worker: no start-up cost, plain tracebacks)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001  (handed to the waiter, as a pool would)
            future.set_exception(exc)
        return future


class SubmititExecutor(Executor):
    """submitit's executors behind the `Executor` seam: each job's result arrives on a Future, set by
    one watcher thread (the debug executor runs the job in `submit`, as it does on its own)."""

    def __init__(self, inner: Any, threads: int | None = None, inline: bool = False) -> None:
        self.inner, self.threads, self.inline = inner, threads, inline
        self.jobs: list[tuple[Any, Future]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.submit_many([(fn, args)])[0]

    def submit_many(self, calls: Sequence[Call]) -> list[Future]:
        """Submit every call (a Slurm job array of them when there are several) and return their Futures."""
        if self.inline:  # this process: its threads and progress settings stay as they are
            return [self._settle(self.inner.submit(fn, *args), Future()) for fn, args in calls]
        with self.inner.batch():
            jobs = [self.inner.submit(CellJob(fn, self.threads), *args) for fn, args in calls]
        futures = [Future() for _ in jobs]
        with self._lock:
            self.jobs += zip(jobs, futures, strict=True)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="submitit-watcher", daemon=True)
            self._watcher.start()
        return futures

    @staticmethod
    def _settle(job: Any, future: Future) -> Future:
        try:
            future.set_result(job.result())
        except Exception as exc:  # noqa: BLE001  (a job that died: the waiter records the cell as failed)
            future.set_exception(NnlabError(
                f"its job {job.job_id} ended without a result ({type(exc).__name__}; killed, out of memory or out "
                f"of time?), its log: {job.paths.stderr}; re-run the study to retry it"))
        return future

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                ended = [_done(j) for j, _ in self.jobs]
                finished = [pair for pair, end in zip(self.jobs, ended, strict=True) if end]
                self.jobs = [pair for pair, end in zip(self.jobs, ended, strict=True) if not end]
            for job, future in finished:
                self._settle(job, future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with self._lock:
                for job, future in self.jobs:
                    job.cancel(check=False)
                    future.cancel()
                self.jobs = []
        self._stop.set()


def _done(job: Any) -> bool:
    try:
        return job.done()
    except Exception:  # noqa: BLE001  (sacct or squeue failed this once: ask again at the next poll)
        return False


def submit_cells(executor: Executor, calls: Sequence[Call]) -> list[Future]:
    """Submit the calls, together when the executor takes a batch (`submit_many`), else one by one."""
    many = getattr(executor, "submit_many", None)
    if many is not None:
        return many(calls)
    return [executor.submit(fn, *args) for fn, args in calls]


def _submitit() -> Any:
    try:
        import submitit  # optional dependency (the cluster extra): only for these executors
    except ImportError:
        raise NnlabError("study.executor: the local, slurm and debug executors need submitit: "
                         "pip install 'nnlab[cluster]'") from None
    return submitit


def slurm_parameters(slurm: SlurmConfig, name: str) -> dict[str, Any]:
    """`[study.slurm]` as SlurmExecutor parameters (the names of sbatch, as submitit spells them)."""
    params: dict[str, Any] = {"job_name": f"nnlab-{name}", "time": slurm.time, "nodes": 1, "ntasks_per_node": 1,
                              "cpus_per_task": slurm.cpus_per_cell, "array_parallelism": slurm.array_parallelism}
    optional = {"partition": slurm.partition, "gpus_per_node": slurm.gpus_per_cell or None,
                "mem": f"{slurm.mem_gb}GB" if slurm.mem_gb else None, "account": slurm.account,
                "qos": slurm.qos, "setup": list(slurm.setup) or None}
    return params | {k: v for k, v in optional.items() if v is not None}


def sbatch_script(slurm: SlurmConfig, name: str, study_dir: str | Path, cells: int = 1) -> str:
    """The script `sbatch` receives for a study of `cells` cells (a job array when more than one), as
    SlurmExecutor writes it; it needs no Slurm to be shown."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string  # optional dependency (the cluster extra)

    folder = Path(study_dir) / JOBS_FOLDER
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=cells if cells > 1 else None,
                               **slurm_parameters(slurm, name))


def make_executor(kind: str, study_dir: Path, name: str, slurm: SlurmConfig, workers: int, threads: int) -> Executor:
    """The executor `study.executor` names; `workers` cells at a time with `threads` torch threads each
    (pool and local; a Slurm job takes the cores of its allocation)."""
    if kind == "pool":
        if workers == 1:
            return InlineExecutor()
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(threads,))
    if kind not in EXECUTORS:
        raise NnlabError(f"study.executor = {kind!r}: expected one of {', '.join(EXECUTORS)}")
    submitit = _submitit()
    folder = study_dir / JOBS_FOLDER  # a job's files: <job id>_submitted.pkl, <job id>_0_log.out/.err, result
    if kind == "debug":
        return SubmititExecutor(submitit.DebugExecutor(folder), threads, inline=True)
    if kind == "local":
        inner = submitit.LocalExecutor(folder)
        inner.update_parameters(timeout_min=24 * 60)
        return SubmititExecutor(inner, threads)
    try:
        inner = submitit.SlurmExecutor(folder)
    except RuntimeError as exc:  # no srun on this machine
        raise NnlabError(f"study.executor = 'slurm': {exc} (run `nnlab study` on a machine that submits to "
                         "Slurm, or use --executor local)") from None
    inner.update_parameters(**slurm_parameters(slurm, name))
    return SubmititExecutor(inner, slurm.cpus_per_cell)
