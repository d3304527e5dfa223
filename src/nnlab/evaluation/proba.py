"""Class probabilities of a model, in batches: the one softmax loop behind evaluation, `nnlab predict`
(images and drawings) and sample grids."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from nnlab.device import autocast


@torch.no_grad()
def batch_proba(model: nn.Module, x: torch.Tensor, device: str = "cpu", amp: str = "off") -> torch.Tensor:
    """Softmax probabilities (B, classes) of one input batch, float32 on the CPU (autocast on CUDA)."""
    with autocast(device, amp):
        return torch.softmax(model(x.to(device, non_blocking=True)).float(), 1).cpu()


@torch.no_grad()
def predict_proba(model: nn.Module, batches: Iterable[torch.Tensor], device: str = "cpu",
                  amp: str = "off") -> np.ndarray:
    """Softmax probabilities of every input batch, concatenated in order: float32 (N, classes)."""
    model.eval()
    out = [batch_proba(model, x, device, amp) for x in batches]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def proba_of_logits(logits: np.ndarray) -> np.ndarray:
    """Softmax probabilities (B, classes) of NumPy logits, in float64 (what a served model answers).
    In NumPy: torch's dispatch costs more than this softmax of a small batch on a server's thread."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
