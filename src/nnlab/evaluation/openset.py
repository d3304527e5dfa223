"""Open-set evaluation: recognising people the model never saw in training.

For the unseen identities of an identity split (``data.split = "identity"``):

- embeddings of every image (L2-normalised, from ``model.embed``);
- identification: the first ``eval.gallery_per_id`` images of each identity (in data
  order) form the gallery, the rest are probes, matched to the gallery by cosine;
  rank-1 and rank-5 identification rates;
- verification: every unordered pair of probes, scored by cosine; ROC, TPR at FPR
  1e-2 and 1e-3, equal error rate, ROC AUC, and the similarity threshold of each of
  those operating points (``threshold_at_fpr``: the default of ``nnlab identify``);
- plots: ``plots/roc.png`` and ``plots/embeddings.png`` (a 2-D t-SNE of the embeddings,
  coloured by identity), and ``predictions/<split>_embeddings.npz``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from nnlab.config import ExperimentConfig
from nnlab.datasets.bundle import DataBundle
from nnlab.device import gather_split
from nnlab.errors import ModelError
from nnlab.fileio import atomic_output
from nnlab.metrics import FPR_TARGETS, identification_rates, threshold_at_fpr, verification_roc, verification_summary
from nnlab.runs.plots import plot_embeddings, plot_roc
from nnlab.runs.run import Run


@torch.no_grad()
def embeddings(model: nn.Module, loader, device: str) -> np.ndarray:
    """L2-normalised embeddings of a loader's images, in loader order (this rank's shard under DDP)."""
    if not hasattr(model, "embed"):
        raise ModelError(f"{type(model).__name__} has no embed(); open-set evaluation needs an embedding model "
                         "(set model.embedding_dim or model.head = 'arcface' / 'cosface')")
    model.eval()
    out = [model.embed(batch[0].to(device)).float().cpu() for batch in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def gallery_mask(ids: np.ndarray, gallery_per_id: int) -> np.ndarray:
    """True for the first `gallery_per_id` occurrences of each identity (in array order)."""
    ids = np.asarray(ids)
    seen: dict[Any, int] = {}
    mask = np.zeros(len(ids), dtype=bool)
    for i, identity in enumerate(ids.tolist()):
        seen[identity] = seen.get(identity, 0) + 1
        mask[i] = seen[identity] <= gallery_per_id
    return mask


def open_set_report(emb: np.ndarray, ids: np.ndarray, gallery_per_id: int = 1,
                    ranks: tuple[int, ...] = (1, 5)) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """Identification and verification metrics of embeddings of unseen identities.

    Returns the report (``rank1``, ``rank5``, ``eer``, ``roc_auc``, ``tpr_at_fpr_0.01``,
    ``tpr_at_fpr_0.001``, ``threshold_at_fpr`` ({"0.01": cosine, "0.001": cosine}) and the
    counts) and the verification ROC ``(fpr, tpr)``, or None
    (with a ``note``) when the probes hold no same-identity pair.
    """
    ids = np.asarray(ids)
    gallery = gallery_mask(ids, gallery_per_id)
    probes = ~gallery
    report: dict[str, Any] = {"identities": int(len(np.unique(ids))), "gallery": int(gallery.sum()),
                              "probes": int(probes.sum())}
    if not probes.any():
        report["note"] = f"no probes: every identity has at most eval.gallery_per_id = {gallery_per_id} images"
        return report, None
    report |= identification_rates(emb[gallery], ids[gallery], emb[probes], ids[probes], ranks=ranks)
    pid = ids[probes]
    _, counts = np.unique(pid, return_counts=True)
    if (counts >= 2).any() and len(counts) >= 2:
        fpr, tpr, thresholds = verification_roc(emb[probes], pid)
        report |= verification_summary(fpr, tpr, FPR_TARGETS)
        report["threshold_at_fpr"] = {f"{t:g}": threshold_at_fpr(fpr, tpr, thresholds, t) for t in FPR_TARGETS}
        report["pairs"] = int(len(pid) * (len(pid) - 1) // 2)
        return report, (fpr, tpr)
    report["note"] = "verification skipped: it needs two identities and two probes of one identity"
    return report, None


def evaluate_open_set(model: nn.Module, data: DataBundle, split: str, device: str, cfg: ExperimentConfig,
                      run: Run | None = None) -> dict[str, Any]:
    """Open-set metrics of one split; with `run`, also its ROC and embedding plots and the embeddings file."""
    loader = data.loaders[split]
    emb = gather_split(loader, embeddings(model, loader, device))
    ids = data.labels[split]
    report, roc = open_set_report(emb, ids, cfg.eval.gallery_per_id)
    if run is not None:
        all_names = list(data.classes) + list(data.info.get("open_set_identities", []))
        names = [all_names[i] if i < len(all_names) else str(i) for i in np.unique(ids)]
        if roc is not None:
            plot_roc(*roc, report, run.plots / "roc.png")
        plot_embeddings(emb, ids, names, gallery_mask(ids, cfg.eval.gallery_per_id), run.plots / "embeddings.png",
                        cfg.seed)
        (run.path / "predictions").mkdir(exist_ok=True)
        with atomic_output(run.path / "predictions" / f"{split}_embeddings.npz", "wb") as fh:
            np.savez(fh, ids=data.ids[split], identities=np.asarray([all_names[i] for i in ids]), embeddings=emb)
    return report
