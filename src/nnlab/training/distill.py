"""Knowledge distillation (Hinton et al. 2015): the student learns from the labels and from its teachers'
softened probabilities.

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(p_teachers || softmax(student / T))
    p_teachers = mean over teachers of softmax(teacher / T)

T^2 keeps the soft term's gradients on the scale of the hard term's as T grows. The teachers are
trained runs (`runs/trained.py` loads their best weights, the EMA's when kept), frozen, in eval mode,
computed on the fly on the very batch the student sees (augmented, mixed): a cache of their outputs
would be keyed by drawing and augmentation seed, and the loop's seeds change every epoch, so it would
never hit. A teacher of the student's input gets the student's batch (an image teacher with another
`data.mean` / `data.std` renormalised). For drawings, a teacher of another input (the sequence model for
a raster student, another image size or rendering) gets its own input, made by the training dataset
from the same augmented drawings (`datasets/strokes.py` `teacher_inputs`: the batch's fourth item);
not with MixUp/CutMix, which mix only the student's images. Image teachers of another input are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.config import DistillConfig, ExperimentConfig
from nnlab.datasets.strokes import input_signature, is_drawing_section
from nnlab.errors import NnlabError
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained

def distill_loss(hard_loss: torch.Tensor, student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) * hard_loss + alpha * T^2 * KL(teacher_probs || softmax(student_logits / T)), the KL
    averaged over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_student, teacher_probs.float(), reduction="batchmean")
    return (1 - alpha) * hard_loss + alpha * temperature ** 2 * kl


class Teachers(nn.Module):
    """The teachers of `train.distill`, frozen; `probs(x)` is their mean softened probabilities and
    `loss(hard_loss, logits, x, extras)` the distillation loss of the student's batch (`extras`: the inputs
    of the teachers of another input, in their order, as the training batches carry them)."""

    def __init__(self, cfg: ExperimentConfig, classes: list[str], device: str) -> None:
        super().__init__()
        spec: DistillConfig = cfg.train.distill
        self.temperature, self.alpha = spec.temperature, spec.alpha
        self.paths = [str(Path(p)) for p in spec.teachers]
        own = input_signature(cfg.data)
        models, shifts, self.extra_of = [], [], []  # extra_of[j]: teacher j's index in the batch's extras
        for path in self.paths:
            run = Run.open(path)
            if run.classes() != classes:
                raise NnlabError(f"train.distill: teacher {path} was trained on other classes (or in another "
                                 "order) than the student's data")
            theirs = input_signature(run.config.data)
            differ = [f"data.{k} {theirs.get(k)!r} (student {own[k]!r})" for k in own if theirs.get(k) != own[k]]
            drawings = is_drawing_section(cfg.data) and is_drawing_section(run.config.data)
            if differ and (not drawings or cfg.data.mixup or cfg.data.cutmix):
                raise NnlabError(f"train.distill: teacher {path} takes another model input: {'; '.join(differ)}; "
                                 + ("MixUp/CutMix mix only the student's input: drop data.mixup / data.cutmix"
                                    if drawings else "an image teacher must take the student's input (size, channels)"))
            self.extra_of.append(sum(e is not None for e in self.extra_of) if differ else None)
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
    def probs(self, x: torch.Tensor, extras: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Mean over the teachers of softmax(logits / T) for the student's batch `x` (and `extras`)."""
        total = None
        for model, (scale, shift), extra in zip(self.models, self.shifts, self.extra_of):
            if extra is not None:
                if extra >= len(extras):
                    raise NnlabError("train.distill: the batch lacks the input of a teacher of another input "
                                     "(the training data was built without the teachers)")
                inputs = extras[extra]
            else:
                inputs = x if (scale, shift) == (1.0, 0.0) else x * scale + shift
            p = F.softmax(model(inputs).float() / self.temperature, dim=1)
            total = p if total is None else total + p
        return total / len(self.models)

    def loss(self, hard_loss: torch.Tensor, student_logits: torch.Tensor, x: torch.Tensor,
             extras: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """The distillation loss of a batch whose labels' loss is `hard_loss`."""
        return distill_loss(hard_loss, student_logits, self.probs(x, extras), self.temperature, self.alpha)

    def describe(self) -> dict[str, Any]:
        """For metrics.json: the teachers and the settings."""
        return {"teachers": self.paths, "temperature": self.temperature, "alpha": self.alpha}


def make_teachers(cfg: ExperimentConfig, classes: list[str], device: str) -> Teachers | None:
    """The teachers `train.distill` names, on `device`, or None without distillation."""
    return Teachers(cfg, classes, device).to(device) if cfg.train.distill is not None else None
