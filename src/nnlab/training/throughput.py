"""Where an epoch's time goes: waiting for the next batch vs computing on it.

The loop takes two timestamps around each `next(batches)`; the sum over the epoch divided by
the epoch's wall time is `data_wait_fraction`, and the images over the rest of the time are the
model's own images/s. On CUDA the host runs ahead of the GPU until the loop's one sync per
logging interval, so time the GPU is busy shows up as model time, never as data wait.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from nnlab.config import ExperimentConfig
from nnlab.datasets.kinds import is_drawings
from nnlab.device import usable_cores

#: Above this share of an epoch spent waiting for batches, the run says once what to change.
DATA_WAIT_HINT = 0.2

#: Steps between the loop's host-device syncs on CUDA (NaN check, progress bar); every step on the CPU.
LOG_EVERY = 20


def throughput(seen: float, seconds: float, wait_seconds: float) -> dict[str, float]:
    """`images_per_second` (wall), `data_wait_fraction` and `model_images_per_second` (time not waiting)."""
    seconds = max(seconds, 1e-9)
    wait = min(max(wait_seconds, 0.0), seconds)
    busy = seconds - wait
    return {"images_per_second": seen / seconds, "data_wait_fraction": wait / seconds,
            "model_images_per_second": seen / busy if busy > 0 else float("inf")}


#: Inside `say_once()` (a study's cells), the notes printed already: cells share one machine and one loader
#: set-up, so the note is said once per study (per worker process), not once per cell.
_SAID: list[set[str]] = []


@contextlib.contextmanager
def say_once() -> Iterator[None]:
    """While active, a data-wait note already printed is not printed again (the training of one run says it
    at most once anyway)."""
    _SAID.append(set())
    try:
        yield
    finally:
        _SAID.pop()


def steady_wait_fraction(stats: dict[str, float]) -> float:
    """The epoch's data wait without its first batch (`first_batch_seconds`): starting the loader's worker
    processes (and the first render's compilation) is paid once, so it tells nothing about the loader's
    pace; a one-batch epoch has none."""
    seconds, first = stats["seconds"], stats.get("first_batch_seconds", 0.0)
    steady = seconds - first
    if steady <= 0:
        return 0.0
    return max(0.0, stats["data_wait_fraction"] * seconds - first) / steady


def data_wait_hint(cfg: ExperimentConfig, epoch: int, stats: dict[str, float]) -> str | None:
    """The one-time note when the loader, not the model, set the pace of `epoch` (counted from 0): its
    wait past the first batch (`steady_wait_fraction`) above DATA_WAIT_HINT, once per process."""
    fraction = steady_wait_fraction(stats)
    if fraction <= DATA_WAIT_HINT:
        return None
    d = cfg.data
    cpus = usable_cores()  # the affinity mask's, as the thread choice counts them
    fixes = [f"more data.num_workers (now {d.num_workers}; this machine has {cpus} CPUs)" if d.num_workers < cpus
             else f"fewer other processes on the CPUs (data.num_workers = {d.num_workers} already)"]
    if is_drawings(d):
        fixes.append(f"a smaller data.image_size (now {d.image_size}) or a cheaper data.encoding (now {d.encoding!r})")
    else:
        fixes.append(f"a smaller data.image_size (now {d.image_size}) or data.augment = false")
    key = f"{fixes[0]} {fixes[1]}"
    if _SAID and key in _SAID[-1]:
        return None
    if _SAID:
        _SAID[-1].add(key)
    return (f"note: epoch {epoch + 1} waited for data {fraction:.0%} of its time (past its first batch), so the "
            f"loader, not the model, sets the pace; try {fixes[0]}, or {fixes[1]}")
