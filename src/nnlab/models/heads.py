"""Embedding models with a classifier head: linear (softmax), ArcFace or CosFace, plus batch-hard triplets.

    image -> backbone (pooled features) -> dropout -> Linear to embedding_dim [-> BatchNorm1d] -> head

Margin heads compare an embedding with one weight vector per class by cosine. During
training they see the labels and penalise the true class's logit:

    ArcFace (Deng et al. 2019):  s * cos(theta_y + m)    for the true class, s * cos(theta_j) otherwise
    CosFace (Wang et al. 2018):  s * (cos(theta_y) - m)  for the true class, s * cos(theta_j) otherwise

Without labels (evaluation, prediction) both return plain ``s * cos(theta)`` logits, so
softmax probabilities and closed-set accuracy work as for any classifier. ``embed(x)``
gives the L2-normalised embeddings used for open-set identification and verification.

Written by hand on purpose (the recipe teaches them); ``tests/test_heads.py`` checks
them against pytorch-metric-learning's ArcFaceLoss, CosFaceLoss and batch-hard triplets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.config import ModelConfig
from nnlab.errors import ModelError
from nnlab.models.registry import build_plain

DEFAULT_MARGINS = {"arcface": 0.5, "cosface": 0.35}


class LinearHead(nn.Module):
    """Plain softmax classifier: logits = W e + b (labels are accepted and ignored)."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(emb)


class CosineHead(nn.Module):
    """Logits ``s * cos(theta_j)`` between the embedding and each class weight; subclasses
    change the true class's cosine when labels are given (the margin)."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) cosines of the embeddings with the class weights."""
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """The true class's cosine with the margin applied (before scaling)."""
        raise NotImplementedError

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # In float32 even under CUDA autocast: the margin near cos = +-1 is lost in bf16/fp16.
        with torch.autocast(emb.device.type, enabled=False):
            cos = self.cosine(emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb)
        if labels is None:
            return self.scale * cos
        index = labels.long()[:, None]
        # Only the true class's entry changes: gather it, apply the margin, scatter it back.
        return self.scale * cos.scatter(1, index, self.target_logit(cos.gather(1, index)))

    def extra_repr(self) -> str:
        return f"classes={self.weight.shape[0]}, dim={self.weight.shape[1]}, scale={self.scale}, margin={self.margin}"


class ArcFaceHead(CosineHead):
    """Additive angular margin: cos(theta + m), in the form that needs no arccos.

    cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m). Past theta = pi - m the
    angle would wrap around and the logit grow again as theta grows; there the usual
    fallback ``cos(theta) - m sin(m)`` keeps the target logit decreasing in theta
    (threshold th = cos(pi - m)). ``easy_margin`` instead applies the margin only where
    cos(theta) > 0.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.5,
                 easy_margin: bool = False) -> None:
        if not 0 <= margin < math.pi / 2:
            raise ModelError(f"model.margin: an ArcFace margin is an angle in radians in [0, pi/2), got {margin}")
        super().__init__(embedding_dim, num_classes, scale, margin)
        self.easy_margin = bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        # clamp_min keeps sqrt's gradient finite at |cos| = 1 (where the clamp passes zero gradient).
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
        phi = cos * self.cos_m - sin * self.sin_m
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        return torch.where(cos > self.th, phi, cos - self.mm)


class CosFaceHead(CosineHead):
    """Additive cosine margin (large margin cosine loss): cos(theta) - m."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.35) -> None:
        super().__init__(embedding_dim, num_classes, scale, margin)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        return cos - self.margin


def batch_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on L2-normalised embeddings.

    For each anchor: its farthest positive and its nearest negative in the batch,
    ``max(0, d(a, p) - d(a, n) + margin)`` with Euclidean distances; the mean over anchors
    that have both (zero, still attached to the graph, when no anchor has).
    """
    e = F.normalize(emb, dim=1)
    # |a - b| = sqrt(2 - 2 cos) for unit vectors; the clamp keeps sqrt's gradient finite.
    dist = torch.sqrt((2.0 - 2.0 * e @ e.T).clamp_min(1e-12))
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return emb.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos, -1.0).amax(1)
    hardest_neg = dist.masked_fill(~neg, math.inf).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that uses its running statistics for a training batch of one
    (the last, partial batch of an epoch can hold a single image)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class EmbeddingModel(nn.Module):
    """Backbone -> dropout -> embedding [-> BatchNorm1d] -> head.

    ``model(x)`` gives logits; ``model(x, labels)`` (training, set by ``needs_labels``)
    gives ``(logits with the margin, weighted triplet term)``, which the training loop
    adds to the cross-entropy. ``embed(x)`` gives L2-normalised embeddings.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, head: nn.Module, embedding_dim: int | None = None,
                 dropout: float = 0.0, embedding_bn: bool = True, triplet_weight: float = 0.0,
                 triplet_margin: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        if embedding_dim is None:
            self.neck: nn.Module = nn.Identity()
        else:
            self.neck = nn.Sequential(nn.Linear(feature_dim, embedding_dim),
                                      *([_BatchNorm1d(embedding_dim)] if embedding_bn else []))
        self.head = head
        self.triplet_weight, self.triplet_margin = float(triplet_weight), float(triplet_margin)
        self.needs_labels = isinstance(head, CosineHead) or self.triplet_weight > 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings (what the head sees)."""
        return self.neck(self.dropout(self.backbone(x)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (for nearest-neighbour search by cosine)."""
        return F.normalize(self.features(x), dim=1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        f = self.features(x)
        if labels is None:
            return self.head(f)
        extra = (self.triplet_weight * batch_hard_triplet_loss(f, labels, self.triplet_margin)
                 if self.triplet_weight > 0 else f.new_zeros(()))
        return self.head(f, labels), extra


def make_head(kind: str, embedding_dim: int, num_classes: int, scale: float = 30.0, margin: float | None = None,
              easy_margin: bool = False) -> nn.Module:
    """A head by name: ``linear``, ``arcface`` or ``cosface`` (margin None: the usual default)."""
    if kind == "linear":
        return LinearHead(embedding_dim, num_classes)
    if kind not in DEFAULT_MARGINS:
        raise ModelError(f"model.head: unknown head {kind!r} (linear, arcface, cosface)")
    margin = DEFAULT_MARGINS[kind] if margin is None else margin
    if kind == "arcface":
        return ArcFaceHead(embedding_dim, num_classes, scale, margin, easy_margin)
    return CosFaceHead(embedding_dim, num_classes, scale, margin)


def build_backbone(cfg: ModelConfig, in_chans: int, image_size: int) -> tuple[nn.Module, int]:
    """The configured model without its classifier, and the size of its pooled features.

    timm models are built with ``num_classes=0`` (pooled features); registered builders
    with one class, after which their last Linear layer is replaced by the identity.
    """
    timm = cfg.name.startswith("timm:")
    plain = cfg.model_copy(update={"dropout": 0.0})  # dropout lives in EmbeddingModel, not in the backbone too
    model = build_plain(plain, in_chans, 0 if timm else 1, image_size)
    if timm:
        return model, int(model.num_features)
    last = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ModelError(f"model.name: {cfg.name} has no final Linear layer to replace by an embedding")
    name, layer = last[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return model, layer.in_features


def build_embedding_model(cfg: ModelConfig, in_chans: int, num_classes: int, image_size: int) -> EmbeddingModel:
    """The embedding model the model section describes (see the module docstring)."""
    backbone, feature_dim = build_backbone(cfg, in_chans, image_size)
    dim = cfg.embedding_dim or feature_dim
    head = make_head(cfg.head, dim, num_classes, cfg.scale, cfg.margin, cfg.easy_margin)
    return EmbeddingModel(backbone, feature_dim, head, cfg.embedding_dim, cfg.dropout, cfg.embedding_bn,
                          cfg.triplet_weight, cfg.triplet_margin)
