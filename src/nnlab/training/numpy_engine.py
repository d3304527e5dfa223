"""`engine = "numpy"`: the same experiment TOML and run directory as the torch engine, trained by
the from-scratch NumPy MLP, so `nnlab report`/`compare`/`study` treat both alike.

Checkpoints are `.npz` + JSON (`nnlab.scratch.serialize`), never pickle; `last.npz` also holds
the optimiser state and, in its JSON header, the epoch and every random generator, so
`nnlab resume` continues exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from nnlab.config import ExperimentConfig
from nnlab.datasets import DataBundle
from nnlab.datasets.kinds import is_drawings
from nnlab.datasets.images import ImageDataset, load_image_source, make_transform
from nnlab.datasets.splits import image_splits
from nnlab.device import choose_threads
from nnlab.errors import ConfigError
from nnlab.evaluation.results import write_results
from nnlab.metrics import evaluation_report
from nnlab.runs.run import Run
from nnlab.scratch.layers import Dropout, Sequential
from nnlab.scratch.losses import softmax_cross_entropy
from nnlab.scratch.model import build_mlp
from nnlab.scratch.optim import OPTIMIZERS, Optimizer
from nnlab.scratch.serialize import load_weights, save_model
from nnlab.scratch.trainer import fit_epoch, predict_proba, steps_per_epoch
from nnlab.training.callbacks import Callback, Callbacks, EarlyStopping
from nnlab.training.epochs import EpochLog, best_tracker, early_stop_note, epoch_row, run_metrics
from nnlab.training.schedule import Schedule, optimizer_kwargs


def check_config(cfg: ExperimentConfig) -> None:
    """What the NumPy engine supports, with the alternative named."""
    problems = []
    if cfg.model.name != "mlp":
        problems.append(f"model.name = {cfg.model.name!r} (the NumPy engine trains model.name = 'mlp')")
    if cfg.data.augment:
        problems.append("data.augment = true (not available in the NumPy engine)")
    if is_drawings(cfg):
        problems.append(f"data.kind = {cfg.data.kind!r} (the NumPy engine takes image data sets)")
    if problems:
        raise ConfigError("engine = 'numpy': unsupported " + "; ".join(problems))


def image_arrays(cfg: ExperimentConfig, run_dir: Path | None) -> tuple[DataBundle, dict[str, np.ndarray]]:
    """Flattened float32 inputs per split, transformed exactly as the torch engine's eval transform does."""
    source = load_image_source(cfg)
    splits = image_splits(cfg, source, run_dir)
    d = cfg.data
    transform = make_transform(train=False, image_size=d.image_size, channels=d.channels, augment=False,
                               mean=d.mean, std=d.std)
    inputs = {}
    for split, index in splits.items():
        inputs[split] = (ImageDataset(source, index, transform).batch(np.arange(len(index)))[0].numpy()
                         .reshape(len(index), -1) if len(index)
                         else np.zeros((0, d.channels * d.image_size ** 2), np.float32))
    bundle = DataBundle(classes=list(source.classes), in_chans=d.channels, image_size=d.image_size, loaders={},
                        ids=dict(splits), labels={k: source.labels[v] for k, v in splits.items()}, image=source.image,
                        info={"sizes": {k: len(v) for k, v in splits.items()}, "skipped": source.skipped})
    return bundle, inputs


def build_optimizer(cfg: ExperimentConfig, model: Sequential) -> Optimizer:
    """`optim.name`'s NumPy optimiser, with the keyword arguments the torch engine's takes."""
    return OPTIMIZERS[cfg.optim.name](model.params(), **optimizer_kwargs(cfg.optim))


def apply_schedule(optimizer: Optimizer, schedule: Schedule, step: int) -> None:
    """Set the schedule's rate (and OneCycle's momentum) for optimiser step `step`, as the torch loop does."""
    optimizer.lr = schedule.lr(step)
    momentum = schedule.momentum(step)
    if momentum is not None and hasattr(optimizer, "betas"):
        optimizer.betas = (momentum, optimizer.betas[1])
    elif momentum is not None:
        optimizer.momentum = momentum


def rng_states(model: Sequential, shuffle: np.random.Generator) -> dict[str, Any]:
    return {"shuffle": shuffle.bit_generator.state,
            "dropout": [layer.rng.bit_generator.state for layer in model.layers if isinstance(layer, Dropout)]}


def set_rng_states(model: Sequential, shuffle: np.random.Generator, states: dict[str, Any]) -> None:
    shuffle.bit_generator.state = states["shuffle"]
    for layer, state in zip([m for m in model.layers if isinstance(m, Dropout)], states["dropout"], strict=True):
        layer.rng.bit_generator.state = state


def fit_numpy(cfg: ExperimentConfig, out: str | Path | None = None, resume_run: Run | None = None,
              announce: Callable[[Run], None] | None = None, echo: bool = True,
              callbacks: Sequence[Callback] = (), restart_patience: bool = False) -> Run:
    """Train an MLP with the NumPy engine into a run directory (or carry on `resume_run`); `echo` prints
    the per-epoch lines (RUN/train.log gets them either way); `callbacks` as the torch engine's, but
    `on_step_end` (the NumPy trainer's inner loop has no hook); `restart_patience`: see `fit_torch`."""
    check_config(cfg)
    run = resume_run or Run.create(cfg, out)
    if announce is not None and resume_run is None:
        announce(run)
    # NumPy's BLAS threads: train.threads, else every usable core (the affinity mask's, not the machine's)
    blas = choose_threads(workers_wanted=0, threads_wanted=run.config.train.threads).blas_threads
    with threadpool_limits(limits=blas, user_api="blas"):
        _train(run, resume=resume_run is not None, echo=echo, callbacks=callbacks, restart_patience=restart_patience)
    return run


def _train(run: Run, resume: bool, echo: bool, callbacks: Sequence[Callback] = (),
           restart_patience: bool = False) -> None:
    cfg = run.config
    data, inputs = image_arrays(cfg, run.path)
    model = build_mlp(inputs["train"].shape[1], cfg.model.hidden, len(data.classes), cfg.model.activation,
                      cfg.model.batchnorm, cfg.model.dropout, seed=cfg.seed)
    optimizer = build_optimizer(cfg, model)
    schedule = Schedule(cfg, steps_per_epoch(len(inputs["train"]), cfg.data.batch_size))
    shuffle = np.random.default_rng(cfg.seed)
    best = best_tracker(cfg)
    last = run.checkpoints / "last.npz"
    start_epoch = 0
    if resume and last.exists():
        meta = load_weights(model, last, optimizer=optimizer)
        set_rng_states(model, shuffle, meta["rng"])
        best.load_state(meta["best"])
        best.stale = 0 if restart_patience else best.stale
        schedule.load_state_dict(meta.get("schedule"))
        start_epoch = meta["epoch"] + 1
        run.truncate_history(start_epoch)
    params = sum(p.size for p in model.params().values())
    run.write_env("cpu", {"engine": "numpy", "numpy_dtype": str(model.dtype), "params": params})
    run.write_classes(data.classes)

    has_val = len(data.labels["val"]) > 0
    stopped_early = False
    log = EpochLog(run, echo=echo, val_examples=len(data.labels["val"]))
    hooks, early = Callbacks(callbacks), EarlyStopping(cfg, best)
    hooks.fit_start(run)
    apply_schedule(optimizer, schedule, start_epoch * schedule.steps_per_epoch)
    for epoch in range(start_epoch, cfg.train.epochs):
        first = epoch * schedule.steps_per_epoch
        start = time.perf_counter()
        stats = fit_epoch(model, softmax_cross_entropy, optimizer, inputs["train"], data.labels["train"],
                          cfg.data.batch_size, shuffle, lambda k: apply_schedule(optimizer, schedule, first + k))
        seconds = time.perf_counter() - start
        val = evaluate(model, data, inputs, "val", cfg.eval.top_k) if has_val else None
        value = val[best.metric] if val is not None else None
        schedule.end_epoch(value)
        apply_schedule(optimizer, schedule, first + schedule.steps_per_epoch)  # lr: the next step's rate
        row = epoch_row(epoch, optimizer.lr, stats, val, seconds, stats["samples"] / seconds)
        run.append_history(row)  # before the checkpoint that marks the epoch done, as the torch loop
        log(row)
        stop = hooks.epoch_end(row)  # the user's callbacks, before the checkpoint as in the torch loop
        best.update(run, epoch, value, lambda path: save_model(path, model, meta={"epoch": epoch}), suffix=".npz")
        save_model(last, model, optimizer=optimizer,
                   meta={"epoch": epoch, "rng": rng_states(model, shuffle), "best": best.state(),
                         "schedule": schedule.state_dict()})
        if stop or early.on_epoch_end(row):  # early stopping reads the best-k count just updated
            stopped_early = True
            log.note(early_stop_note(run, epoch))
            break

    best_file = run.best_checkpoint()
    load_weights(model, best_file)
    history = run.history()
    metrics = run_metrics(cfg, "numpy", best_file.name, params, history, stopped_early,
                          sum(r["epoch_seconds"] for r in history), data.info)
    outputs = {}
    for split in ("val", "test"):
        if len(data.labels[split]):
            outputs[split] = predict_proba(model, inputs[split])
            metrics[split] = evaluate(model, data, inputs, split, cfg.eval.top_k, outputs[split])
    hooks.fit_end(run, write_results(run, data, metrics, outputs))


def evaluate(model: Sequential, data: DataBundle, inputs: dict[str, np.ndarray], split: str, k: int,
             probs: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one split, as the torch engine's `evaluation.evaluate` reports them."""
    probs = predict_proba(model, inputs[split]) if probs is None else probs
    return evaluation_report(data.labels[split], probs, ids=data.ids[split], k=k)
