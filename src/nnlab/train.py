"""The torch training loop: one readable function from config to finished run directory.

    fit(cfg) -> Run
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

import math
import os
import random
import time
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from nnlab.config import ExperimentConfig
from nnlab.data import DataBundle, build_data
from nnlab.errors import NnlabError, TrainingError
from nnlab.metrics import classification_report, higher_is_better
from nnlab.models import build_model, count_parameters
from nnlab.progress import progress
from nnlab.runs import BestCheckpoints, Run, atomic_save


# --------------------------------------------------------------------------- setup


@dataclass
class Dist:
    """Where this process stands in a (possibly single-process) distributed run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(choice: str, local_rank: int = 0) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise NnlabError("train.device = 'cuda' but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    return "cpu"


def seed_everything(seed: int) -> None:
    """One seed drives Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), int(pos), int(has_gauss), float(cached)  # plain types: weights_only loading


def freeze_layers(model: nn.Module, freeze_first: int = 0, train_last: int | None = None) -> None:
    """Freeze the first N parameterised layers, or all but the last K (as the Quick, Draw! notebook does)."""
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    frozen = layers[:freeze_first] if train_last is None else layers[:max(0, len(layers) - train_last)]
    if train_last is not None and freeze_first:
        frozen = layers[:max(freeze_first, len(layers) - train_last)]
    for layer in frozen:
        for p in layer.parameters(recurse=False):
            p.requires_grad_(False)


def build_optimizer(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise NnlabError("every parameter is frozen (train.freeze_first / train.train_last): nothing to train")
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def build_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step schedules (cosine, onecycle) and per-epoch ones (step, plateau); None for constant."""
    s, epochs = cfg.schedule, cfg.train.epochs
    total = max(1, epochs * steps_per_epoch)
    if s.name == "cosine":
        warmup = int(s.warmup_epochs * steps_per_epoch)
        floor = s.min_lr / cfg.optim.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if s.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.optim.lr, total_steps=total)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "plateau":
        mode = "max" if higher_is_better(cfg.eval.main_metric) else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=s.factor, patience=s.patience)
    return None


STEP_SCHEDULES = ("cosine", "onecycle")


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(run: Run, epoch: int, model: nn.Module, optimizer, scheduler, scaler,
                    best: BestCheckpoints, value: float | None) -> None:
    """last.pt every epoch (model, optimiser, schedule, RNG); best-e<epoch>-<metric><value>.pt for the best k."""
    weights = unwrap(model).state_dict()
    best.update(run, epoch, value, lambda path: atomic_save({"epoch": epoch, "model": weights}, path))
    state = {"epoch": epoch, "model": weights, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "scaler": scaler.state_dict() if scaler is not None else None,
             "rng": rng_state(), "best": best.state()}
    atomic_save(state, run.checkpoints / "last.pt")


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NnlabError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- one epoch


def train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion, cfg: ExperimentConfig, device: str,
                    epoch: int, steps: int, show: bool) -> dict[str, float]:
    """One pass over `steps` batches; returns mean loss, accuracy and throughput."""
    t = cfg.train
    model.train()
    amp = autocast(device, t.amp)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    bar = progress(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False, disable=None if show else True)
    optimizer.zero_grad(set_to_none=True)
    batches = iter(loader)
    for step in range(steps):
        x, y = next(batches)[:2]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp:
            logits, loss = forward_loss(model, x, y, criterion)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; training stopped, "
                                "the last good checkpoint is kept (try a lower optim.lr or train.clip_grad_norm)")
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
            if scheduler is not None and cfg.schedule.name in STEP_SCHEDULES:
                scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
    bar.close()
    elapsed = time.perf_counter() - start
    totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)])
    if dist.is_initialized():
        dist.all_reduce(totals)
    loss_total, correct_total, seen_total = totals.tolist()
    return {"loss": loss_total / seen_total, "accuracy": correct_total / seen_total,
            "seconds": elapsed, "images_per_second": seen_total / elapsed}


def forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss. Margin heads (ArcFace, CosFace) need the labels inside the forward pass:
    such a model sets `needs_labels` and returns (logits with the margin, an extra loss term)."""
    if getattr(unwrap(model), "needs_labels", False):
        logits, extra = model(x, y)
        return logits, criterion(logits, y) + extra
    logits = model(x)
    return logits, criterion(logits, y)


def autocast(device: str, amp: str):
    """bf16/fp16 autocast on CUDA ('auto' = bf16 where supported); full precision on the CPU."""
    if not device.startswith("cuda") or amp == "off":
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()) else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def predict_proba(model: nn.Module, loader, device: str, amp: str = "off") -> np.ndarray:
    """Class probabilities for a loader in its order (this rank's shard under DDP)."""
    model.eval()
    out = []
    with autocast(device, amp):
        for batch in loader:
            x = batch[0].to(device, non_blocking=True)
            out.append(torch.softmax(model(x).float(), 1).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def gather_split(loader, rows: np.ndarray) -> np.ndarray:
    """Rows of a whole eval split in order: under DDP each rank holds a strided shard, interleaved back."""
    if not dist.is_initialized():
        return rows
    pieces = [None] * dist.get_world_size()
    dist.all_gather_object(pieces, rows)
    full = np.zeros((loader.sampler.size, pieces[0].shape[1]), dtype=np.float32)
    for r, piece in enumerate(pieces):
        full[r::dist.get_world_size()] = piece
    return full


def evaluate(model: nn.Module, data: DataBundle, split: str, device: str, amp: str, k: int) -> tuple[dict, np.ndarray]:
    """Metrics of one split (gathered across ranks, aligned by id); returns (metrics, probabilities)."""
    loader = data.loaders[split]
    probs = gather_split(loader, predict_proba(model, loader, device, amp))
    report = classification_report(data.labels[split], probs, ids=data.ids[split], k=k)
    report["loss"] = report["log_loss"]
    return report, probs


def evaluate_split(model: nn.Module, data: DataBundle, split: str, device: str, cfg: ExperimentConfig,
                   run: Run | None = None) -> tuple[dict, np.ndarray | None]:
    """`evaluate`, except on the unseen people of an identity split (`data.split = 'identity'`, test):
    identification and verification metrics, with plots written into `run` when given, and no probabilities."""
    if split == "test" and cfg.data.split == "identity":
        from nnlab.openset import evaluate_open_set

        return evaluate_open_set(model, data, split, device, cfg, run), None
    return evaluate(model, data, split, device, cfg.train.amp, cfg.eval.top_k)


# --------------------------------------------------------------------------- the run


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fit(cfg: ExperimentConfig, out: str | Path | None = None, resume_run: Run | None = None,
        stop_after_epoch: int | None = None, announce: Callable[[Run], None] | None = None) -> Run:
    """Train an experiment into a run directory (or carry on `resume_run`) and return the run.

    `announce` is called with the new run before training starts (the CLI prints its path);
    `stop_after_epoch` ends the session after that epoch as an interruption would (for tests).
    """
    if cfg.engine == "numpy":
        from nnlab.scratch.engine import fit_numpy

        return fit_numpy(cfg, out=out, resume_run=resume_run, announce=announce)
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    ddp = setup_distributed(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run = resume_run or _create_run(cfg, out, ddp)
    if announce is not None and ddp.main and resume_run is None:
        announce(run)
    cfg = run.config
    seed_everything(cfg.seed)
    data = build_data(cfg, run.path, ddp.rank, ddp.world)
    model = build_model(cfg.model, data.in_chans, len(data.classes), data.image_size).to(device)
    freeze_layers(model, cfg.train.freeze_first, cfg.train.train_last)
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[ddp.local_rank] if device != "cpu" else None)
    optimizer = build_optimizer(cfg, model)
    steps = cfg.train.steps_per_epoch or len(data.loaders["train"])
    scheduler = build_scheduler(cfg, optimizer, math.ceil(steps / cfg.train.grad_accum))
    scaler = torch.amp.GradScaler("cuda") if device.startswith("cuda") and cfg.train.amp == "fp16" else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    metric = cfg.eval.main_metric
    best = BestCheckpoints(metric, higher_is_better(metric), cfg.train.keep_best)

    start_epoch = 0
    if resume_run is not None and (run.checkpoints / "last.pt").exists():
        state = load_checkpoint(run.checkpoints / "last.pt")
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        best.load_state(state["best"])
        start_epoch = state["epoch"] + 1
        if ddp.main:
            run.truncate_history(state["epoch"] + 1)  # history counts epochs from 1
    if ddp.main:
        run.write_env(device, {"world_size": ddp.world, "params": count_parameters(model)})
        run.write_classes(data.classes)

    has_val = data.has("val")
    train_seconds = sum(r.get("epoch_seconds", 0.0) for r in run.history()) if ddp.main else 0.0
    stopped_early = False
    for epoch in range(start_epoch, cfg.train.epochs):
        for holder in (data.loaders["train"].sampler, getattr(data.loaders["train"], "batch_sampler", None)):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        stats = train_one_epoch(model, data.loaders["train"], optimizer, scheduler, scaler, criterion, cfg,
                                device, epoch, steps, show=ddp.main)
        train_seconds += stats["seconds"]
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                               "train_loss": stats["loss"], "train_accuracy": stats["accuracy"]}
        value = None
        if has_val:
            val, _ = evaluate(model, data, "val", device, cfg.train.amp, cfg.eval.top_k)
            row |= {f"val_{k}": v for k, v in val.items()}
            value = val[metric]
        row |= {"epoch_seconds": stats["seconds"], "images_per_second": stats["images_per_second"]}
        if scheduler is not None and cfg.schedule.name == "step":
            scheduler.step()
        elif scheduler is not None and cfg.schedule.name == "plateau" and value is not None:
            scheduler.step(value)
        if ddp.main:
            save_checkpoint(run, epoch, model, optimizer, scheduler, scaler, best, value)
            run.append_history(row)
        else:
            best.update(run, epoch, value, save=None)  # the same early-stopping count, no files
        if cfg.train.early_stop_patience and best.stale >= cfg.train.early_stop_patience:
            stopped_early = True
            break
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.train.epochs:
            return run
    if dist.is_initialized():
        dist.barrier()  # rank 0 has written the last checkpoint
    finish(run, model, data, device, train_seconds, stopped_early, write=ddp.main)
    return run


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
    unwrap(model).load_state_dict(load_checkpoint(best)["model"])
    history = run.history()
    metrics: dict[str, Any] = {"name": cfg.name, "engine": "torch", "model": cfg.model.name,
                               "main_metric": cfg.eval.main_metric, "checkpoint": best.name,
                               "params": count_parameters(unwrap(model)), "epochs": len(history),
                               "stopped_early": stopped_early, "train_seconds": train_seconds,
                               "images_per_second": float(np.mean([r["images_per_second"] for r in history]))
                               if history else None, "data": data.info}
    outputs = {}
    for split in ("val", "test"):
        if data.has(split):
            metrics[split], probs = evaluate_split(unwrap(model), data, split, device, cfg, run if write else None)
            if probs is not None:
                outputs[split] = probs
    return write_results(run, data, metrics, outputs) if write else metrics


def write_results(run: Run, data: DataBundle, metrics: dict[str, Any], outputs: dict[str, np.ndarray]) -> dict:
    """Shared by both engines: metrics.json, predictions/<split>.csv, plots."""
    from nnlab.metrics import confusion_matrix, per_class_accuracy, top_confusions
    from nnlab.predict import write_probabilities
    from nnlab.report import write_run_plots

    final = "test" if "test" in outputs else "val" if "val" in outputs else None
    if final is not None:
        y = data.labels[final]
        cm = confusion_matrix(y, outputs[final].argmax(1), len(data.classes))
        metrics["per_class_accuracy"] = {c: (None if np.isnan(a) else a)  # no examples: null, not NaN
                                         for c, a in zip(data.classes, per_class_accuracy(cm).tolist(), strict=True)}
        metrics["top_confusions"] = [list(c) for c in top_confusions(cm, data.classes, n=10)]
        metrics["confusion_split"] = final
    for split, probs in outputs.items():
        write_probabilities(run.path / "predictions" / f"{split}.csv", data.ids[split], probs, data.classes,
                            labels=data.labels[split], k=run.config.eval.top_k)
    run.write_json("metrics.json", metrics)
    write_run_plots(run, confusion=(cm, data.classes) if final is not None else None)
    return metrics
