"""A trained run's model, ready to predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from nnlab.datasets.kinds import input_channels
from nnlab.device import load_torch_file
from nnlab.errors import NnlabError
from nnlab.runs.run import Run
from nnlab.store.format import StrokeStore

EMA_KEY = "ema"  # the EMA weights' entry in last.pt and best-*.pt


def load_trained(run: Run, device: str = "cpu") -> nn.Module:
    """The run's model with its best checkpoint's weights, in eval mode."""
    from nnlab.models import build_model  # heavy (timm, torchvision, ~4 s): an export's server never builds one

    cfg = run.config
    classes = run.classes()
    if cfg.engine != "torch":
        raise NnlabError(f"{run.path}: a {cfg.engine} run; load it with nnlab.scratch")
    model = build_model(cfg.model.model_copy(update={"weights": None, "pretrained": False}),
                        input_channels(cfg.data), len(classes), cfg.data.image_size)
    best = run.best_checkpoint()
    state = load_torch_file(best, sorted(run.checkpoints.glob("*.pt")))
    if not isinstance(state, dict) or "model" not in state:
        raise NnlabError(f"{best}: not an nnlab checkpoint (no model weights in it)")
    model.load_state_dict(trained_weights(state))
    return model.to(device).eval()


def raw_handling(run: Run) -> str:
    """How the run takes raw drawings, as it was trained (`nnlab.strokes.simplify.to_canvas`): "frame" for a
    run trained on a raw store, else "simplify" (simplified stores, synthetic doodles, image runs)."""
    drawings = None
    if (run.path / "metrics.json").is_file():
        drawings = json.loads((run.path / "metrics.json").read_text()).get("data", {}).get("drawings")
    elif run.config.data.kind == "strokes" and run.config.data.path and Path(run.config.data.path).is_dir():
        drawings = StrokeStore.open(run.config.data.path).kind  # a run still training: its store says
    return "frame" if drawings == "raw" else "simplify"


def trained_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint's user should take: the EMA's when the run kept one (`train.ema_decay`),
    else the model's."""
    return state.get(EMA_KEY) or state["model"]
