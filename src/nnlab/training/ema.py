"""Model EMA: an exponential moving average of the weights (and BatchNorm buffers), updated after
every optimiser step, evaluated and checkpointed as its own state, and used by predict and export when
present. The decay warms up (`train.ema_warmup`): with a fixed 0.999 from the first step, 0.999^n of the
random initial weights and BatchNorm statistics stay in the average, 40% after 900 steps, which
ruined short runs (`benchmarks/quickdraw_real.py`: MAP@3 0.016 against 0.39 for the raw weights).
timm's ModelEmaV3 does the averaging (fused in-place lerps: ema = decay * ema + (1 - decay) * w).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from nnlab.config import ExperimentConfig

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3  # for the annotations only


def make_ema(cfg: ExperimentConfig, model: nn.Module) -> ModelEmaV3 | None:
    """An EMA copy of `model` (before any DDP wrapper) when `train.ema_decay` is set."""
    if not cfg.train.ema_decay:
        return None
    from timm.utils import ModelEmaV3  # heavy (timm, torchvision): only runs with an EMA load it

    # float32 EMA whatever the model's dtype: (1 - decay) * (w - ema) vanishes in bf16 at decay 0.999
    return ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=cfg.train.ema_warmup, stochastic_rounding=False)


def update_ema(ema: ModelEmaV3 | None, model: nn.Module, step: int | None = None) -> None:
    """One EMA step towards the (unwrapped) model's current weights. `step` (the optimiser steps so far,
    this one included) sets the warmed-up decay where `train.ema_warmup` is on: the first step copies the
    weights, the decay then grows as 1 - (1 + step)^(-2/3) up to `train.ema_decay` (about 31,000 steps
    for 0.999). Without `step`, the decay is `train.ema_decay`."""
    if ema is not None:
        ema.update(model, step=step if ema.use_warmup else None)
