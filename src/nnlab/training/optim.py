"""Optimisers and layer freezing of the torch loop, built from the config; the learning rate of every
step comes from `training/schedule.py`, which the NumPy engine uses too."""

from __future__ import annotations

import torch
from torch import nn

from nnlab.config import ExperimentConfig
from nnlab.errors import NnlabError
from nnlab.training.schedule import Schedule, optimizer_kwargs

TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


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
    """`optim.name`'s torch optimiser over the trainable parameters (the NumPy engine's takes the same kwargs)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise NnlabError("every parameter is frozen (train.freeze_first / train.train_last): nothing to train")
    return TORCH_OPTIMIZERS[cfg.optim.name](params, **optimizer_kwargs(cfg.optim))


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, step: int) -> None:
    """Set every parameter group to the schedule's rate (and OneCycle's momentum) for optimiser step `step`."""
    lr, momentum = schedule.lr(step), schedule.momentum(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if momentum is not None and "betas" in group:
            group["betas"] = (momentum, *group["betas"][1:])
        elif momentum is not None:
            group["momentum"] = momentum
