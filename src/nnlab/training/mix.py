"""MixUp and CutMix of training batches (timm's `Mixup`), with the soft-target loss they need.

A mixed batch's targets are label-smoothed one-hot rows mixed with the same weight as the images
(each row sums to 1), so the loss is the soft-target cross-entropy; the training accuracy and every
evaluation still use the hard labels. `data.mix_off_epochs` trains the last epochs unmixed."""

from __future__ import annotations

import torch
from torch import nn

from nnlab.config import ExperimentConfig


class BatchMixer:
    """`mix(x, y, epoch)` -> (images, soft targets); unmixed (lam = 1) in the last `data.mix_off_epochs`
    epochs and for an odd batch (MixUp pairs each image with its mirror in the batch)."""

    def __init__(self, cfg: ExperimentConfig, num_classes: int) -> None:
        from timm.data.mixup import Mixup, mixup_target  # heavy (timm, torchvision): only mixed runs load it

        d = cfg.data
        self._unmixed = mixup_target
        self.smoothing, self.num_classes = cfg.loss.label_smoothing, num_classes
        self.last_mixed_epoch = cfg.train.epochs - d.mix_off_epochs - 1
        self.mixup = Mixup(mixup_alpha=d.mixup, cutmix_alpha=d.cutmix, prob=d.mix_prob, mode="batch",
                           label_smoothing=self.smoothing, num_classes=num_classes)

    def active(self, epoch: int) -> bool:
        """Whether epoch `epoch` (from 0) mixes its batches."""
        return epoch <= self.last_mixed_epoch

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active(epoch) or len(x) % 2:
            return x, self._unmixed(y, self.num_classes, 1.0, self.smoothing)
        return self.mixup(x, y)


def make_mixer(cfg: ExperimentConfig, num_classes: int) -> BatchMixer | None:
    """The batch mixer `data.mixup` / `data.cutmix` ask for, or None."""
    return BatchMixer(cfg, num_classes) if cfg.data.mixup > 0 or cfg.data.cutmix > 0 else None


def soft_target_loss() -> nn.Module:
    """The loss of mixed targets (label smoothing is already in them): timm's SoftTargetCrossEntropy."""
    from timm.loss import SoftTargetCrossEntropy  # heavy (timm): with the mixer

    return SoftTargetCrossEntropy()
