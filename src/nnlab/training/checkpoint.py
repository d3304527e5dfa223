"""Checkpoints of the torch loop: `last.pt` every epoch (model, optimiser, schedule, scaler, RNG, best-k
state) and the best k by the main metric, written atomically."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from nnlab.device import load_torch_file, rng_state, unwrap
from nnlab.errors import NnlabError
from nnlab.fileio import kill_point
from nnlab.runs.run import RUN_ID, BestCheckpoints, Run, atomic_save
from nnlab.runs.trained import EMA_KEY


def save_checkpoint(run: Run, epoch: int, model: nn.Module, optimizer, scheduler, scaler,
                    best: BestCheckpoints, value: float | None, ema=None) -> None:
    """last.pt every epoch (model, optimiser, schedule, RNG, EMA); best-e<epoch>-<metric><value>.pt for the
    best k (the model's weights and, with an EMA, the EMA's, which the value scored)."""
    weights = unwrap(model).state_dict()
    averaged = ema.module.state_dict() if ema is not None else None
    kept = {"epoch": epoch, RUN_ID: run.id, "model": weights} | ({EMA_KEY: averaged} if averaged is not None else {})
    best.update(run, epoch, value, lambda path: atomic_save(kept, path))
    state = {"epoch": epoch, RUN_ID: run.id, "model": weights, EMA_KEY: averaged, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "scaler": scaler.state_dict() if scaler is not None else None,
             "rng": rng_state(), "best": best.state()}
    atomic_save(state, run.checkpoints / "last.pt")
    keep_epoch_weights(run, epoch, averaged if averaged is not None else weights)
    kill_point("checkpoint-saved")


def keep_epoch_weights(run: Run, epoch: int, weights: dict[str, Any]) -> None:
    """With train.keep_last = N, this epoch's weights as epoch-e<k>.pt, and only the last N of them."""
    keep = run.config.train.keep_last
    if not keep:
        return
    atomic_save({"epoch": epoch, RUN_ID: run.id, "model": weights}, run.checkpoints / f"epoch-e{epoch + 1:03d}.pt")
    for old in epoch_checkpoints(run)[:-keep]:
        old.unlink(missing_ok=True)


def epoch_checkpoints(run: Run) -> list[Path]:
    """The kept epoch-e<k>.pt files in epoch order (by number: e1000 comes after e999)."""
    epochs = {}
    for path in run.checkpoints.glob("epoch-e*.pt"):
        if m := re.fullmatch(r"epoch-e(\d+)\.pt", path.name):
            epochs[path] = int(m.group(1))
    return sorted(epochs, key=epochs.__getitem__)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of this loop; a damaged or unsafe file is a ModelError naming the others."""
    state = load_torch_file(path, sorted(Path(path).parent.glob("*.pt")))
    if not isinstance(state, dict) or "model" not in state:
        raise NnlabError(f"{path}: not an nnlab checkpoint (no model weights in it)")
    return state
