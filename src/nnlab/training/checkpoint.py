"""Checkpoints of the torch loop: `last.pt` every epoch (model, optimiser, schedule, scaler, RNG, best-k
state) and the best k by the main metric, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nnlab.device import load_torch_file, rng_state, unwrap
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
    """A checkpoint of this loop; a damaged or unsafe file is a ModelError naming the others."""
    state = load_torch_file(path, sorted(Path(path).parent.glob("*.pt")))
    if not isinstance(state, dict) or "model" not in state:
        raise NnlabError(f"{path}: not an nnlab checkpoint (no model weights in it)")
    return state
