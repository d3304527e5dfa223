"""Model EMA: an exponential moving average of the weights (and BatchNorm buffers), updated after
every optimiser step, evaluated and checkpointed as its own state, and used by predict and export when
present. timm's ModelEmaV3 does the averaging (fused in-place lerps: ema = decay * ema + (1 - decay) * w).
"""

from __future__ import annotations

from timm.utils import ModelEmaV3
from torch import nn

from nnlab.config import ExperimentConfig


def make_ema(cfg: ExperimentConfig, model: nn.Module) -> ModelEmaV3 | None:
    """An EMA copy of `model` (before any DDP wrapper) when `train.ema_decay` is set."""
    if not cfg.train.ema_decay:
        return None
    # float32 EMA whatever the model's dtype: (1 - decay) * (w - ema) vanishes in bf16 at decay 0.999
    return ModelEmaV3(model, decay=cfg.train.ema_decay, stochastic_rounding=False)


def update_ema(ema: ModelEmaV3 | None, model: nn.Module) -> None:
    """One EMA step towards the (unwrapped) model's current weights."""
    if ema is not None:
        ema.update(model)
