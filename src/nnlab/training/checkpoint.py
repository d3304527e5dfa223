"""Checkpoints of the torch loop: `last.pt` every epoch (model, optimiser, schedule, scaler, RNG, best-k
state) and the best k by the main metric, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnlab.device import rng_state, unwrap
from nnlab.errors import NnlabError
from nnlab.fileio import kill_point
from nnlab.runs.run import BestCheckpoints, Run, atomic_save


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
    kill_point("checkpoint-saved")


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NnlabError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)
