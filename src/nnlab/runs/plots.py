"""Every plot of a run, written as PNG with matplotlib (Agg): history and confusion (all runs), the
verification ROC and a 2-D map of the embeddings (open-set runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from nnlab.runs.run import Run
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

FPR_TARGETS = (1e-2, 1e-3)  # the verification operating points reported and marked on the ROC

MAX_CONFUSION_CLASSES = 50


def write_run_plots(run: Run, confusion: tuple[np.ndarray, list[str]] | None = None) -> list[Path]:
    """plots/history.png always; plots/confusion.png when a confusion matrix is given."""
    written = [plot_history(run.history(), run.config.eval.main_metric, run.plots / "history.png")]
    if confusion is not None:
        written.append(plot_confusion(*confusion, run.plots / "confusion.png"))
    return written


def plot_history(history: list[dict[str, float]], metric: str, path: Path) -> Path:
    """Loss and the main metric per epoch, train and val side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [r["epoch"] for r in history]
    for ax, name in zip(axes, ("loss", metric), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{name}"
            values = [r.get(key, np.nan) for r in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix; beyond 50 classes only the most confused classes are shown."""
    cm = np.asarray(cm, dtype=float)
    shown = np.arange(len(classes))
    if len(classes) > MAX_CONFUSION_CLASSES:
        off = cm - np.diag(np.diag(cm))
        shown = np.sort(np.argsort(-(off.sum(0) + off.sum(1)), kind="stable")[:MAX_CONFUSION_CLASSES])
    sub = cm[np.ix_(shown, shown)]
    rate = sub / np.maximum(cm[shown].sum(1, keepdims=True), 1)
    n = len(shown)
    size = min(16, 3 + 0.32 * n)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    names = [classes[i] for i in shown]
    ax.set_xticks(range(n), names, rotation=90, fontsize=max(5, 10 - n // 10))
    ax.set_yticks(range(n), names, fontsize=max(5, 10 - n // 10))
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if rate[i, j] >= 0.005:
                    ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "confusion (row-normalised)"
    if len(classes) > n:
        title += f": the {n} most confused of {len(classes)} classes"
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- text



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
        perplexity = float(min(30.0, (len(emb) - 1) / 3))
        return TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(emb), "t-SNE"
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
