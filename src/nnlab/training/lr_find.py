"""Leslie Smith's learning-rate range test (`nnlab lr-find`), as fastai's `lr_find` runs it.

The configured model is trained from its initial weights for `steps` batches while the learning rate
grows exponentially from `start_lr` to `end_lr`; the loss is smoothed (an exponential moving average
with bias correction) and the test stops once it exceeds `diverge` times its minimum. Two suggestions
come from the curve, with fastai's rules: *steepest* (the lr where the smoothed loss falls fastest per
decade) and *valley* (the middle of the longest stretch of decreasing loss, a little past its first
third). Nothing of the model is kept: only the plot and a JSON are written.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from nnlab.config import ExperimentConfig
from nnlab.datasets import build_data
from nnlab.device import autocast, pick_device, seed_everything
from nnlab.errors import ConfigError, TrainingError
from nnlab.fileio import atomic_write_text
from nnlab.models import build_model
from nnlab.progress import progress
from nnlab.runs.plots import lr_find_figure, save
from nnlab.training.loop import forward_loss
from nnlab.training.optim import build_optimizer, freeze_layers, set_lr


@dataclass
class LRFindResult:
    """The range test's curve and its two suggested learning rates."""

    lrs: list[float]
    losses: list[float]  # smoothed
    raw_losses: list[float]
    steepest: float
    valley: float
    diverged: bool

    @property
    def suggestion(self) -> float:
        """The lr to put in `optim.lr`: the valley rule (fastai's default, steadier than the steepest point)."""
        return self.valley


def lr_find(cfg: ExperimentConfig, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            beta: float = 0.98, diverge: float = 4.0) -> LRFindResult:
    """Run the range test on the configured model and training data (see the module docstring)."""
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < --start-lr < --end-lr (got {start_lr:g}, {end_lr:g})")
    if steps < 10:
        raise ConfigError(f"lr-find: --steps {steps}: give at least 10 steps")
    if not 0 <= beta < 1:
        raise ConfigError(f"lr-find: beta = {beta!r}: the loss smoothing needs 0 <= beta < 1 (default 0.98)")
    if not diverge > 1:
        raise ConfigError(f"lr-find: diverge = {diverge!r}: stop at a multiple > 1 of the best loss (default 4)")
    if cfg.engine != "torch":
        raise ConfigError("lr-find: needs engine = 'torch' (the range test trains the torch model)")
    device = pick_device(cfg.train.device)
    seed_everything(cfg.seed)
    data = build_data(cfg)
    model = build_model(cfg.model, data.in_chans, len(data.classes), data.image_size).to(device)
    freeze_layers(model, cfg.train.freeze_first, cfg.train.train_last)
    optimizer = build_optimizer(cfg, model)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    ratio = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, raw, smooth = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    model.train()
    batches = _endless(data.loaders["train"])
    for step in progress(range(steps), desc="lr-find", unit="batch"):
        lr = start_lr * ratio ** step
        set_lr(optimizer, lr)
        x, y = next(batches)[:2]
        x, y = x.to(device), y.to(device)
        with autocast(device, cfg.train.amp):
            _, loss = forward_loss(model, x, y, criterion)
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            break
        loss.backward()
        optimizer.step()
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (step + 1))
        lrs.append(lr), raw.append(value), smooth.append(smoothed)
        best = min(best, smoothed)
        if smoothed > diverge * best:
            diverged = True
            break
    if len(lrs) < 10:
        raise TrainingError(f"lr-find: the loss diverged after {len(lrs)} steps; lower --start-lr")
    steepest, valley = suggestions(np.asarray(lrs), np.asarray(smooth))
    return LRFindResult(lrs, smooth, raw, steepest, valley, diverged)


def suggestions(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
    """(steepest, valley) as fastai computes them, on the curve without its first tenth and last 5 points."""
    n = len(lrs)
    keep = slice(n // 10, max(n // 10 + 2, n - 5))
    lrs, losses = lrs[keep], losses[keep]
    steepest = float(lrs[int(np.argmin(np.gradient(losses, np.log(lrs))))])
    # valley: the longest decreasing subsequence of the loss; its start plus half again of its first third
    longest = np.ones(len(losses), dtype=np.int64)
    end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
    start = end - longest[end]
    third = (end - start) / 3
    valley = float(lrs[max(0, start + int(third) + int(third / 2))])
    return steepest, valley


def _endless(loader):
    while True:
        yield from loader


def write_lr_find(result: LRFindResult, out: str | Path, title: str = "") -> tuple[Path, Path]:
    """lr_find.png and lr_find.json in `out`."""
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:  # each file atomic; a full disk (one DataError) leaves no folder this call made
        png = save(lr_find_figure(result.lrs, result.losses, result.steepest, result.valley, title),
                   out / "lr_find.png")
        data = asdict(result) | {"suggestion": result.suggestion}
        return png, atomic_write_text(out / "lr_find.json", json.dumps(data, indent=2) + "\n")
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise


def lr_find_for(cfg: ExperimentConfig, out: str | Path | None = None, **options) -> tuple[LRFindResult, Path]:
    """The range test and its files (default folder runs/<name>-lr-find/); returns the result and the plot."""
    result = lr_find(cfg, **options)
    png, _ = write_lr_find(result, out or Path("runs") / f"{cfg.name}-lr-find", f"{cfg.name}: {cfg.model.name}, "
                                                                                  f"{cfg.optim.name}")
    return result, png

