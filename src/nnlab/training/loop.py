"""The torch training loop: one readable function from config to finished run directory.

    fit_torch(cfg) -> Run
      data, model, optimiser, schedule       (built from the config)
      for each epoch:
          train one epoch                    (AMP on CUDA, accumulation, clipping, NaN guard)
          evaluate on val                    (metrics reduced across DDP ranks)
          checkpoint: last.pt + best k       (atomic; model, optimiser, schedule, RNG)
          history.csv, early stopping
      final evaluation with the best checkpoint -> metrics.json, plots, predictions

`resume(run)` reloads last.pt and carries on; on the CPU the result is bit for bit the
same as an uninterrupted run, because the data order depends only on (seed, epoch) and
every random generator is restored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nnlab.config import ExperimentConfig
from nnlab.datasets import DataBundle, build_data
from nnlab.device import (
    Dist,
    ThreadPlan,
    apply_threads,
    autocast,
    check_compile,
    input_layout,
    pick_device,
    prepare_model,
    seed_everything,
    set_rng_state,
    setup_distributed,
    thread_plan,
    unwrap,
)
from nnlab.errors import TrainingError
from nnlab.evaluation.evaluate import evaluate, evaluate_split
from nnlab.evaluation.results import write_results
from nnlab.models import build_model, count_parameters
from nnlab.progress import progress
from nnlab.runs.run import Run
from nnlab.runs.trained import EMA_KEY, trained_weights
from nnlab.training.callbacks import Callback, Callbacks, EarlyStopping
from nnlab.training.checkpoint import load_checkpoint, save_checkpoint
from nnlab.training.distill import Teachers, make_teachers
from nnlab.training.ema import make_ema, update_ema
from nnlab.training.epochs import EpochLog, best_tracker, early_stop_note, epoch_row, run_metrics
from nnlab.training.mix import BatchMixer, make_mixer, soft_target_loss
from nnlab.training.optim import apply_schedule, base_lr, build_optimizer, freeze_layers, unfreeze_all
from nnlab.training.schedule import Schedule
from nnlab.training.tensorboard import TensorBoardLog
from nnlab.training.throughput import LOG_EVERY, data_wait_hint, throughput


_NOTED: set[str] = set()  # the thread notes this process has printed


def train_one_epoch(model, loader, optimizer, schedule: Schedule, scaler, criterion, cfg: ExperimentConfig,
                    device: str, epoch: int, steps: int, show: bool, ema=None,
                    mixer: BatchMixer | None = None, teachers: Teachers | None = None,
                    hooks: Callbacks | None = None) -> dict[str, float]:
    """One pass over `steps` batches (after each optimiser step the EMA, if any, is updated and the
    schedule sets the next step's rate); returns mean loss, accuracy and throughput (`throughput.py`).
    `mixer` mixes the batches (MixUp/CutMix, soft targets), `teachers` adds the distillation term;
    the accuracy is on the hard labels either way.

    The host never waits for the GPU except once per LOG_EVERY steps (the NaN check), so the time
    spent in `next(batches)` is the time the loop waited for data."""
    t = cfg.train
    model.train()
    amp = autocast(device, t.amp)
    check_every = 1 if device == "cpu" else LOG_EVERY  # a check is a sync on CUDA, free on the CPU
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    nonfinite = torch.zeros((), device=device, dtype=torch.bool)
    seen, waited, warmup, start = 0, 0.0, 0.0, time.perf_counter()
    bar = progress(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False, disable=None if show else True)
    optimizer.zero_grad(set_to_none=True)
    updates = epoch * schedule.steps_per_epoch  # optimiser steps before this epoch (the EMA's warm-up, the schedule)
    batches = iter(loader)
    for step in range(steps):
        asked = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:  # a finite loader shorter than train.steps_per_epoch: another pass over it
            batches = iter(loader)
            batch = next(batches)
        x, y = batch[:2]
        extras = [e.to(device, non_blocking=True) for e in batch[3]] if len(batch) > 3 else ()  # other teachers' inputs
        waited += time.perf_counter() - asked
        if step == 0:
            warmup = waited  # the first batch: the loader's workers starting, not its pace
        x = x.to(device, non_blocking=True, memory_format=input_layout(x, t.channels_last))
        y = y.to(device, non_blocking=True)
        x, target = mixer(x, y, epoch) if mixer is not None else (x, y)
        with amp:
            logits, loss = forward_loss(model, x, target, criterion, teachers, extras)
        nonfinite |= ~torch.isfinite(loss.detach())
        if (step % check_every == 0 or step + 1 == steps) and nonfinite.item():
            where = f"step {step + 1}" if check_every == 1 else f"by step {step + 1}"
            raise TrainingError(f"loss became {loss.item() if check_every == 1 else 'nan or inf'} at epoch "
                                f"{epoch + 1}, {where}; training stopped, the last good checkpoint is kept "
                                "(try a lower optim.lr or train.clip_grad_norm)")
        scaled = loss / t.grad_accum
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if (step + 1) % t.grad_accum == 0 or step + 1 == steps:
            if t.clip_grad_norm:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            updates += 1
            update_ema(ema, unwrap(model), updates)
            apply_schedule(optimizer, schedule, updates)
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        bar.update()
        if hooks is not None:
            hooks.step_end(epoch * steps + step, loss.detach())
        if step % LOG_EVERY == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}",
                            data_wait=f"{waited / (time.perf_counter() - start):.0%}")
    bar.close()
    elapsed = time.perf_counter() - start
    totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device),
                          torch.tensor(waited, device=device)])
    if dist.is_initialized():
        dist.all_reduce(totals)
    loss_total, correct_total, seen_total, waited_total = totals.tolist()
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {"loss": loss_total / seen_total, "accuracy": correct_total / seen_total, "seconds": elapsed,
            "first_batch_seconds": warmup,  # this rank's; kept out of history.csv
            **throughput(seen_total, elapsed, waited_total / world)}  # the ranks' mean wait


def forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion, teachers: Teachers | None = None,
                 extras=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss (`y`: labels, or a mixed batch's soft targets; `teachers`: distillation, `extras` the
    inputs of its teachers of another input). Margin
    heads (ArcFace, CosFace) need the labels inside the forward pass: such a model sets `needs_labels`
    and returns (logits with the margin, an extra loss term)."""
    if getattr(unwrap(model), "needs_labels", False):
        logits, extra = model(x, y)
        return logits, criterion(logits, y) + extra
    logits = model(x)
    loss = criterion(logits, y)
    return logits, loss if teachers is None else teachers.loss(loss, logits, x, extras)


def fit_torch(cfg: ExperimentConfig, out: str | Path | None = None, resume_run: Run | None = None,
              stop_after_epoch: int | None = None, announce: Callable[[Run], None] | None = None,
              echo: bool = True, callbacks: Sequence[Callback] = (), restart_patience: bool = False) -> Run:
    """Train a torch experiment into a run directory (or carry on `resume_run`) and return the run.

    `announce` is called with the new run before training starts (the CLI prints its path);
    `restart_patience` (a resumed run extended to more epochs) counts early stopping's epochs afresh;
    `stop_after_epoch` ends the session after that epoch as an interruption would (for tests);
    `echo` prints the per-epoch lines (RUN/train.log gets them either way); `callbacks` are called
    after the built-in ones (early stopping, TensorBoard; see `training/callbacks.py`).
    """
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.train.compile:
        check_compile(device)  # before the run directory exists
    ddp = setup_distributed(device)
    threads = thread_plan(cfg, ddp.world if device == "cpu" else 1)
    apply_threads(threads)
    run = resume_run or _create_run(cfg, out, ddp)
    if announce is not None and ddp.main and resume_run is None:
        announce(run)
    cfg = run.config
    if ddp.main and echo and device == "cpu" and cfg.train.amp in ("bf16", "fp16"):
        print(f"note: train.amp = {cfg.train.amp!r} applies on CUDA only; this CPU run is fp32", flush=True)
    if ddp.main and device == "cpu":
        _say_threads(threads, echo)
    seed_everything(cfg.seed)
    data = build_data(cfg, run.path, ddp.rank, ddp.world, pin_memory=device.startswith("cuda"))
    model, ema = _build_model(cfg, data, device, ddp)
    optimizer = build_optimizer(cfg, model)
    steps = cfg.train.steps_per_epoch or len(data.loaders["train"])
    schedule = Schedule(cfg, math.ceil(steps / cfg.train.grad_accum))  # per optimiser step
    scaler = torch.amp.GradScaler("cuda") if device.startswith("cuda") and cfg.train.amp == "fp16" else None
    mixer, teachers = make_mixer(cfg, len(data.classes)), make_teachers(cfg, data.classes, device)
    criterion = soft_target_loss() if mixer else nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    best = best_tracker(cfg)

    start_epoch = _resume(run, ddp, model, optimizer, schedule, scaler, ema, best) if resume_run is not None else 0
    if restart_patience:
        best.stale = 0
    apply_schedule(optimizer, schedule, start_epoch * schedule.steps_per_epoch)
    if ddp.main:
        run.write_env(device, {"world_size": ddp.world, "params": count_parameters(model),
                               "threads": dataclasses.asdict(threads)})
        run.write_classes(data.classes)

    has_val = data.has("val")
    train_seconds = sum(r.get("epoch_seconds", 0.0) for r in run.history()) if ddp.main else 0.0
    stopped_early, hinted = False, False
    log = EpochLog(run, echo=echo, val_examples=len(data.labels["val"]) if has_val else 0) if ddp.main else None
    tb = TensorBoardLog(run, enabled=cfg.train.tensorboard and ddp.main, lr=lambda: base_lr(optimizer))
    hooks, early = Callbacks([tb, *callbacks]), EarlyStopping(cfg, best)
    hooks.fit_start(run)
    for epoch in range(start_epoch, cfg.train.epochs):
        for holder in (data.loaders["train"].sampler, getattr(data.loaders["train"], "batch_sampler", None)):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        if cfg.train.unfreeze_epoch is not None and epoch >= cfg.train.unfreeze_epoch and unfreeze_all(model) \
                and ddp.main and echo:
            print(f"epoch {epoch + 1}: every layer trains from now on (train.unfreeze_epoch)", flush=True)
        stats = train_one_epoch(model, data.loaders["train"], optimizer, schedule, scaler, criterion, cfg,
                                device, epoch, steps, show=ddp.main, ema=ema, mixer=mixer, teachers=teachers,
                                hooks=hooks)
        train_seconds += stats["seconds"]
        hint = None if hinted or not ddp.main else data_wait_hint(cfg, epoch, stats)
        if hint:
            print(hint, file=sys.stderr, flush=True)
            hinted = True
        scored = ema.module if ema is not None else model  # the EMA weights are the ones evaluated
        val = evaluate(scored, data, "val", device, cfg.train.amp, cfg.eval.top_k)[0] if has_val else None
        value = val[best.metric] if val is not None else None
        schedule.end_epoch(value)
        apply_schedule(optimizer, schedule, (epoch + 1) * schedule.steps_per_epoch)  # lr: the next step's rate
        row = epoch_row(epoch, base_lr(optimizer), stats, val, stats["seconds"],
                        stats["images_per_second"])
        if ddp.main:  # the epoch's history row, log line and scalars, then the checkpoint that marks it done:
            run.append_history(row)  # a kill before the checkpoint leaves lines that resume drops and writes again
            log(row)
        stop = hooks.epoch_end(row)  # TensorBoard's scalars, the user's callbacks (every rank: one stops all)
        if ddp.main:
            save_checkpoint(run, epoch, model, optimizer, schedule, scaler, best, value, ema)
        else:
            best.update(run, epoch, value, save=None)  # the same early-stopping count, no files
        if stop or early.on_epoch_end(row):  # early stopping reads the best-k count the checkpoint updated
            stopped_early = True
            if log is not None:
                log.note(early_stop_note(run, epoch))
            break
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.train.epochs:
            hooks.close()
            return run
    if dist.is_initialized():
        dist.barrier()  # rank 0 has written the last checkpoint
    hooks.fit_end(run, finish(run, model, data, device, train_seconds, stopped_early, write=ddp.main))
    return run


def _build_model(cfg: ExperimentConfig, data, device: str, ddp: Dist):
    """The model to train (frozen layers, memory layout, compiled, DDP-wrapped as the config says) and its
    EMA copy (None without train.ema_decay)."""
    model = build_model(cfg.model, data.in_chans, len(data.classes), data.image_size)
    freeze_layers(model, cfg.train.freeze_first, cfg.train.train_last)
    model = prepare_model(model, device, cfg.train.channels_last)
    ema = make_ema(cfg, model)  # copied before compiling: the copy must not share the compiled forward
    if cfg.train.compile:
        model = prepare_model(model, device, compile=True, compile_mode=cfg.train.compile_mode)
    if ddp.world > 1 and cfg.train.unfreeze_epoch is not None:
        raise TrainingError("train.unfreeze_epoch is not supported with DistributedDataParallel (it fixes the "
                            "trained parameters when it wraps the model); train on one process")
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[ddp.local_rank] if device != "cpu" else None)
    return model, ema


def _say_threads(threads: ThreadPlan, echo: bool) -> None:
    """The thread note, once per process and plan (a study's cells, a notebook's re-runs say it once);
    an oversubscribing plan is said on stderr even with `echo` off."""
    if (echo or threads.oversubscribed) and threads.note() not in _NOTED:
        _NOTED.add(threads.note())
        print(threads.note(), file=sys.stderr if threads.oversubscribed else sys.stdout, flush=True)


def _resume(run: Run, ddp: Dist, model, optimizer, schedule: Schedule, scaler, ema, best) -> int:
    """Load last.pt into everything that trains (model, optimiser, schedule, scaler, EMA, RNG, best-k) and
    bring history.csv back to its epochs; returns the epoch to start from (0 when there is no last.pt)."""
    last = run.checkpoints / "last.pt"
    if ddp.main:
        run.remove_partial_files()
        if not last.exists():
            run.truncate_history(0)  # killed in the first epoch, after its history row
    if not last.exists():
        return 0
    state = load_checkpoint(last)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["scheduler"])  # the plateau's state; the other rates follow the step
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if ema is not None and state.get(EMA_KEY) is not None:
        ema.module.load_state_dict(state[EMA_KEY])
    set_rng_state(state["rng"])
    best.load_state(state["best"])
    if ddp.main:
        run.truncate_history(state["epoch"] + 1)  # history counts epochs from 1
    return state["epoch"] + 1

def _create_run(cfg: ExperimentConfig, out, ddp: Dist) -> Run:
    """Rank 0 makes the directory; the other ranks learn its path from it."""
    run = Run.create(cfg, out) if ddp.main else None
    if ddp.world > 1:
        box = [str(run.path) if run else None]
        dist.broadcast_object_list(box, src=0)
        run = run or Run(Path(box[0]), cfg)
    return run


def finish(run: Run, model: nn.Module, data: DataBundle, device: str, train_seconds: float,
           stopped_early: bool, write: bool = True) -> dict[str, Any]:
    """Evaluate the best checkpoint on val and test (every rank); rank 0 writes metrics, predictions, plots."""
    cfg = run.config
    best = run.best_checkpoint()
    unwrap(model).load_state_dict(trained_weights(load_checkpoint(best)))
    metrics = run_metrics(cfg, "torch", best.name, count_parameters(unwrap(model)), run.history(), stopped_early,
                          train_seconds, data.info)
    if cfg.train.distill is not None:
        metrics["distill"] = cfg.train.distill.model_dump()
    outputs = {}
    for split in ("val", "test"):
        if data.has(split):
            metrics[split], probs = evaluate_split(unwrap(model), data, split, device, cfg, run if write else None)
            if probs is not None:
                outputs[split] = probs
    return write_results(run, data, metrics, outputs) if write else metrics
