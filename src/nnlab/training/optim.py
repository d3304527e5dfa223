"""Optimisers, learning-rate schedules and layer freezing of the torch loop, built from the config."""

from __future__ import annotations

import math

import torch
from torch import nn

from nnlab.config import ExperimentConfig, higher_is_better
from nnlab.errors import NnlabError


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
