"""Knowledge distillation (Hinton et al. 2015): the student learns from the labels and from its teachers'
softened probabilities.

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(p_teachers || softmax(student / T))
    p_teachers = mean over teachers of softmax(teacher / T)

T^2 keeps the soft term's gradients on the scale of the hard term's as T grows. The teachers are
trained runs (`runs/trained.py` loads their best weights, the EMA's when kept), frozen, in eval mode,
computed on the fly on the very batch the student sees (augmented, mixed): a cache of their outputs
would be keyed by drawing and augmentation seed, and the loop's seeds change every epoch, so it would
never hit. Teachers must take the student's input (the same model input: image size, channels and, for
drawings, the rendering); an image teacher with another `data.mean` / `data.std` gets the batch
renormalised. Teachers of another input kind (a sequence teacher for a raster student) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.config import DistillConfig, ExperimentConfig
from nnlab.errors import NnlabError
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained

#: data options that shape the model input of drawings (besides image_size, channels and the modality)
_DRAWING_INPUT = ("encoding", "line_width", "padding", "max_points")


def distill_loss(hard_loss: torch.Tensor, student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) * hard_loss + alpha * T^2 * KL(teacher_probs || softmax(student_logits / T)), the KL
    averaged over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_student, teacher_probs.float(), reduction="batchmean")
    return (1 - alpha) * hard_loss + alpha * temperature ** 2 * kl


def input_signature(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a model of `cfg` takes as input, besides the images' normalisation."""
    d = cfg.data
    sig = {"input": d.input_modality, "image_size": d.image_size, "channels": d.channels}
    if d.input_modality != "images":
        sig |= {k: getattr(d, k) for k in _DRAWING_INPUT}
    return sig


class Teachers(nn.Module):
    """The teachers of `train.distill`, frozen; `probs(x)` is their mean softened probabilities and
    `loss(hard_loss, logits, x)` the distillation loss of the student's batch."""

    def __init__(self, cfg: ExperimentConfig, classes: list[str], device: str) -> None:
        super().__init__()
        spec: DistillConfig = cfg.train.distill
        self.temperature, self.alpha = spec.temperature, spec.alpha
        self.paths = [str(Path(p)) for p in spec.teachers]
        own = input_signature(cfg)
        models, shifts = [], []
        for path in self.paths:
            run = Run.open(path)
            if run.classes() != classes:
                raise NnlabError(f"train.distill: teacher {path} was trained on other classes (or in another "
                                 "order) than the student's data")
            theirs = input_signature(run.config)
            differ = [f"data.{k} {theirs[k]!r} (student {own[k]!r})" for k in own if theirs.get(k) != own[k]]
            if differ:
                raise NnlabError(f"train.distill: teacher {path} takes another model input: {'; '.join(differ)}; "
                                 "teachers must take the student's input (same kind of input, size and rendering)")
            model = load_trained(run, device)
            for p in model.parameters():
                p.requires_grad_(False)
            models.append(model)
            # images: x_student * std_s + mean_s = pixel / 255 = x_teacher * std_t + mean_t
            t, s = run.config.data, cfg.data
            shifts.append((s.std / t.std, (s.mean - t.mean) / t.std) if own["input"] == "images" else (1.0, 0.0))
        self.models = nn.ModuleList(models)
        self.shifts = shifts

    def train(self, mode: bool = True) -> Teachers:
        return super().train(False)  # always in eval mode (BatchNorm statistics, dropout)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the teachers of softmax(logits / T) for the student's batch `x`."""
        total = None
        for model, (scale, shift) in zip(self.models, self.shifts):
            inputs = x if (scale, shift) == (1.0, 0.0) else x * scale + shift
            p = F.softmax(model(inputs).float() / self.temperature, dim=1)
            total = p if total is None else total + p
        return total / len(self.models)

    def loss(self, hard_loss: torch.Tensor, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The distillation loss of a batch whose labels' loss is `hard_loss`."""
        return distill_loss(hard_loss, student_logits, self.probs(x), self.temperature, self.alpha)

    def describe(self) -> dict[str, Any]:
        """For metrics.json: the teachers and the settings."""
        return {"teachers": self.paths, "temperature": self.temperature, "alpha": self.alpha}


def make_teachers(cfg: ExperimentConfig, classes: list[str], device: str) -> Teachers | None:
    """The teachers `train.distill` names, on `device`, or None without distillation."""
    return Teachers(cfg, classes, device).to(device) if cfg.train.distill is not None else None
