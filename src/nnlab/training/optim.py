"""Optimisers, layer-wise learning-rate decay and layer freezing of the torch loop, built from the config;
the learning rate of every step comes from `training/schedule.py`, which the NumPy engine uses too.

With `train.layer_decay` the parameters form timm's layer groups (`param_groups_layer_decay`), each
with an `lr_scale` (decay ** layers above it); every rate set here is the schedule's times the group's scale."""

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


def unfreeze_all(model: nn.Module) -> bool:
    """Let every parameter train again (`train.unfreeze_epoch`); whether any was frozen."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    return bool(frozen)


def build_optimizer(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    """`optim.name`'s torch optimiser over the trainable parameters (the NumPy engine's takes the same kwargs).

    With `train.unfreeze_epoch` the frozen parameters are in it from the start (without gradients the
    optimiser leaves them alone), so unfreezing needs no new optimiser and a resume finds the same groups."""
    kwargs = optimizer_kwargs(cfg.optim)
    later = cfg.train.unfreeze_epoch is not None
    if not any(p.requires_grad for p in model.parameters()):
        raise NnlabError("every parameter is frozen (train.freeze_first / train.train_last): nothing to train")
    if cfg.train.layer_decay is not None:
        from timm.optim import param_groups_layer_decay  # heavy (timm): only with train.layer_decay

        frozen = [p for p in model.parameters() if not p.requires_grad] if later else []
        for p in frozen:  # timm's grouping leaves frozen parameters out
            p.requires_grad_(True)
        params = param_groups_layer_decay(model, weight_decay=cfg.optim.weight_decay, layer_decay=cfg.train.layer_decay,
                                          weight_decay_exclude_1d=False)  # the weight decay of optim, as without
        for p in frozen:
            p.requires_grad_(False)
    else:
        params = [p for p in model.parameters() if p.requires_grad or later]
    optimizer = TORCH_OPTIMIZERS[cfg.optim.name](params, **kwargs)
    set_lr(optimizer, cfg.optim.lr)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's rate: `lr` times the group's layer-decay scale (1 without layer decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's rate the groups were last set to (a group's rate over its scale)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, step: int) -> None:
    """Set every parameter group to the schedule's rate (times its layer-decay scale) and OneCycle's
    momentum for optimiser step `step`."""
    set_lr(optimizer, schedule.lr(step))
    momentum = schedule.momentum(step)
    for group in optimizer.param_groups:
        if momentum is not None and "betas" in group:
            group["betas"] = (momentum, *group["betas"][1:])
        elif momentum is not None:
            group["momentum"] = momentum
