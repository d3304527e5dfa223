"""A trained run's model, ready to predict."""

from __future__ import annotations

import torch
from torch import nn

from nnlab.errors import NnlabError
from nnlab.models import build_model
from nnlab.runs.run import Run

def load_trained(run: Run, device: str = "cpu") -> nn.Module:
    """The run's model with its best checkpoint's weights, in eval mode."""
    cfg = run.config
    classes = run.classes()
    if cfg.engine != "torch":
        raise NnlabError(f"{run.path}: a {cfg.engine} run; load it with nnlab.scratch")
    model = build_model(cfg.model.model_copy(update={"weights": None, "pretrained": False}),
                        cfg.data.channels, len(classes), cfg.data.image_size)
    state = torch.load(run.best_checkpoint(), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
