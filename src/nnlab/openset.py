"""Open-set evaluation: recognising people the model never saw in training.

For the unseen identities of an identity split (``data.split = "identity"``):

- embeddings of every image (L2-normalised, from ``model.embed``);
- identification: the first ``eval.gallery_per_id`` images of each identity (in data
  order) form the gallery, the rest are probes, matched to the gallery by cosine;
  rank-1 and rank-5 identification rates;
- verification: every unordered pair of probes, scored by cosine; ROC, TPR at FPR
  1e-2 and 1e-3, equal error rate, ROC AUC;
- plots: ``plots/roc.png`` and ``plots/embeddings.png`` (a 2-D t-SNE of the embeddings,
  coloured by identity), and ``predictions/<split>_embeddings.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from nnlab.config import ExperimentConfig  # noqa: E402
from nnlab.data import DataBundle  # noqa: E402
from nnlab.errors import ModelError  # noqa: E402
from nnlab.metrics import identification_rates, verification_roc, verification_summary  # noqa: E402
from nnlab.runs import Run  # noqa: E402

FPR_TARGETS = (1e-2, 1e-3)


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
    ``tpr_at_fpr_0.001`` and the counts) and the verification ROC ``(fpr, tpr)``, or None
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
        fpr, tpr, _ = verification_roc(emb[probes], pid)
        report |= verification_summary(fpr, tpr, FPR_TARGETS)
        report["pairs"] = int(len(pid) * (len(pid) - 1) // 2)
        return report, (fpr, tpr)
    report["note"] = "verification skipped: it needs two identities and two probes of one identity"
    return report, None


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, report: dict[str, Any], path: Path) -> Path:
    """Verification ROC on a log FPR axis, with the EER and the TPR@FPR operating points."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    floor = max(1e-4, 0.5 / max(1, report.get("pairs", 1)))
    ax.plot(np.maximum(fpr, floor), tpr, lw=1.6, label=f"ROC (AUC {report['roc_auc']:.3f})")
    eer = report["eer"]
    ax.plot([max(eer, floor)], [1 - eer], "o", label=f"EER {eer:.3f}")
    for t in FPR_TARGETS:
        value = report[f"tpr_at_fpr_{t:g}"]
        ax.plot([t], [value], "s", ms=5, label=f"TPR@FPR={t:g}: {value:.3f}")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (different people accepted)")
    ax.set_ylabel("true positive rate (same person accepted)")
    ax.set_title(f"verification over {report.get('pairs', 0):,} probe pairs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def project_2d(emb: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D projection: t-SNE (cosine) for 10 or more points, PCA below."""
    if len(emb) >= 10:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(emb) - 1) / 3))
        return TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(emb), "t-SNE"
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(emb) if len(emb) >= 2 else np.zeros((len(emb), 2)), "PCA"


def plot_embeddings(emb: np.ndarray, ids: np.ndarray, names: list[str], gallery: np.ndarray, path: Path,
                    seed: int = 0) -> Path:
    """Embeddings projected to 2-D, one colour per identity; gallery images drawn as stars."""
    xy, method = project_2d(emb, seed)
    uniq, code = np.unique(ids, return_inverse=True)
    cmap = plt.get_cmap("tab10" if len(uniq) <= 10 else "tab20" if len(uniq) <= 20 else "nipy_spectral")
    colours = cmap(code / max(1, len(uniq) - 1)) if len(uniq) > 20 else cmap(code % cmap.N)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.scatter(xy[~gallery, 0], xy[~gallery, 1], c=colours[~gallery], s=22, alpha=0.85, linewidths=0)
    ax.scatter(xy[gallery, 0], xy[gallery, 1], c=colours[gallery], s=120, marker="*", edgecolors="black",
               linewidths=0.6)
    if len(uniq) <= 20:
        for k, name in enumerate(names):
            ax.scatter([], [], color=cmap(k % cmap.N), s=22, label=name)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="identity", title_fontsize=8)
    ax.set_title(f"embeddings of {len(uniq)} unseen identities ({method}; stars: gallery)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_open_set(model: nn.Module, data: DataBundle, split: str, device: str, cfg: ExperimentConfig,
                      run: Run | None = None) -> dict[str, Any]:
    """Open-set metrics of one split; with `run`, also its ROC and embedding plots and the embeddings file."""
    from nnlab.train import gather_split

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
        np.savez(run.path / "predictions" / f"{split}_embeddings.npz", ids=data.ids[split],
                 identities=np.asarray([all_names[i] for i in ids]), embeddings=emb)
    return report
