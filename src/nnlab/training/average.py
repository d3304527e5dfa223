"""`nnlab average RUN --best K | --last N --out NEW_RUN`: a run whose weights are the mean of some of
another run's checkpoints (timm's avg_checkpoints; the 14th and 21st places of Kaggle's Quick, Draw!
averaged their last 10 and best 4). BatchNorm statistics are recomputed on training batches (the mean
of several models' running statistics is not the statistics of the mean model, as in SWA), then the
new run is evaluated and reported like any other, so predict, export, serve and ensembles take it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from nnlab.datasets import build_data
from nnlab.device import pick_device
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write_bytes, disk_full_error, is_disk_full
from nnlab.evaluation.evaluate import evaluate_split
from nnlab.evaluation.results import write_results
from nnlab.models import build_model, count_parameters
from nnlab.runs.run import RUN_ID, Run, atomic_save
from nnlab.runs.trained import trained_weights
from nnlab.training.checkpoint import epoch_checkpoints, load_checkpoint
from nnlab.training.epochs import run_metrics

BN_BATCHES = 200  # training batches that re-estimate the BatchNorm statistics of the averaged weights
AVERAGED = "averaged.pt"


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating tensors (in float64, cast back); integer buffers (BatchNorm's
    num_batches_tracked) are taken from the last state."""
    if not states:
        raise NnlabError("average: no checkpoints to average")
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise NnlabError("average: the checkpoints hold different models (keys or shapes differ)")
    out = {}
    for k in keys:
        first = states[0][k]
        if first.is_floating_point():
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(first.dtype)
        else:
            out[k] = states[-1][k].clone()
    return out


def chosen_checkpoints(run: Run, best: int | None, last: int | None) -> list[Path]:
    """The best K kept checkpoints by the main metric, or the last N epochs' weights, oldest first."""
    if (best is None) == (last is None):
        raise NnlabError("average: give exactly one of --best K and --last N")
    if best is not None:
        metas = run.best_metas()
        if len(metas) < best:
            damaged = len(list(run.checkpoints.glob("best-*.json"))) - len(metas)
            raise NnlabError(f"{run.path}: {len(metas)} best checkpoints kept" +
                             (f" ({damaged} with an unreadable best-*.json or a missing checkpoint)" if damaged else "")
                             + f", {best} asked; train with train.keep_best >= {best}")
        sign = 1 if metas[0]["higher_is_better"] else -1
        # best first, later epochs first among equals: the order Run.best_checkpoint picks by
        metas = sorted(metas, key=lambda m: (sign * m["value"], m["epoch"]), reverse=True)[:best]
        return [run.checkpoints / m["file"] for m in sorted(metas, key=lambda m: m["epoch"])]
    files = epoch_checkpoints(run)
    if len(files) < last:
        raise NnlabError(f"{run.path}: {len(files)} epoch checkpoints kept, {last} asked; train with "
                         f"train.keep_last >= {last}")
    return files[-last:]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def average_run(run_dir: str | Path, out: str | Path, best: int | None = None, last: int | None = None) -> Run:
    """Average the chosen checkpoints of `run_dir` into a new, evaluated run directory `out`; a failure
    (a full disk: one DataError) leaves no new run behind."""
    start = time.perf_counter()
    source = Run.open(run_dir)
    if source.config.engine != "torch":
        raise NnlabError(f"{source.path}: a {source.config.engine} run; averaging needs a torch run")
    files = chosen_checkpoints(source, best, last)
    checkpoints = [own_checkpoint(source, f) for f in files]
    states = [trained_weights(c) for c in checkpoints]  # the EMA's weights where kept
    epochs = [int(c["epoch"]) for c in checkpoints]
    weights = average_state_dicts(states)
    run = Run.create(source.config, out)
    try:
        _write_averaged(source, run, files, epochs, weights, start)
    except BaseException as exc:
        run.discard()
        if is_disk_full(exc):
            raise disk_full_error(run.path, "the new run was removed") from None
        raise
    run.release()
    return run


def own_checkpoint(run: Run, path: Path) -> dict[str, Any]:
    """A checkpoint of `run`, refused when it carries another run's id (one copied in from elsewhere)."""
    state = load_checkpoint(path)
    theirs = state.get(RUN_ID)
    if theirs is not None and run.id is not None and theirs != run.id:
        raise NnlabError(f"{path}: written by another run (run id {theirs}; {run.path} is {run.id}); averaging "
                         "it would mix two trainings. Remove it from the checkpoints folder, or average that run")
    return state


def _write_averaged(source: Run, run: Run, files: list[Path], epochs: list[int], weights: dict,
                    start: float) -> None:
    """The averaged run's files; `start` (perf_counter) is when averaging began: its time is this run's own."""
    cfg = source.config
    for name in ("splits.json", "history.csv", "classes.txt"):  # same data split, same curves, same classes
        if (source.path / name).is_file():
            atomic_write_bytes(run.path / name, (source.path / name).read_bytes())
    device = pick_device(cfg.train.device)
    data = build_data(cfg, run.path)
    model = build_model(cfg.model.model_copy(update={"weights": None, "pretrained": False}), data.in_chans,
                        len(data.classes), data.image_size)
    model.load_state_dict(weights)
    model.to(device)
    if has_batchnorm(model):
        update_bn(_inputs(data.loaders["train"], BN_BATCHES), model, device=device)
    atomic_save({"epoch": max(epochs), "model": model.state_dict()}, run.checkpoints / AVERAGED)
    seconds = time.perf_counter() - start  # this run's own time: loading, averaging, the BatchNorm pass
    info: dict[str, Any] = {"source": str(source.path), "checkpoints": [f.name for f in files],
                            "epochs": [e + 1 for e in epochs], "bn_recomputed": has_batchnorm(model),
                            "seconds": seconds}
    run.write_json("averaged.json", info)
    run.write_env(device, {"params": count_parameters(model), "averaged_from": str(source.path)})
    # train_seconds and images/s are the averaging's: the source's training time is in its own metrics.json
    metrics = run_metrics(cfg, "torch", AVERAGED, count_parameters(model), run.history(), False, seconds,
                          data.info) | {"images_per_second": None, "averaged": info}
    outputs = {}
    for split in ("val", "test"):
        if data.has(split):
            metrics[split], probs = evaluate_split(model, data, split, device, cfg, run)
            if probs is not None:
                outputs[split] = probs
    write_results(run, data, metrics, outputs)


def _inputs(loader, limit: int):
    """The first `limit` input batches of a loader, as update_bn wants them (inputs only)."""
    for k, batch in enumerate(loader):
        if k >= limit:
            return
        yield batch[0]
