"""Every plot of a run, written as PNG with matplotlib (Agg): history and confusion (all runs), the
verification ROC and a 2-D map of the embeddings (open-set runs)."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from nnlab.fileio import atomic_output
from nnlab.metrics import FPR_TARGETS, top_confusions
from nnlab.progress import in_notebook
from nnlab.runs.run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # for the annotations only


@functools.cache
def mpl() -> SimpleNamespace:
    """matplotlib, loaded with the first plot (0.6-0.8 s of CPU, which most commands never need): `plt`
    (pyplot), `Plot` and `MaxNLocator`. Agg outside Jupyter (files only); in Jupyter the inline backend stays,
    so returned figures display."""
    import matplotlib  # heavy: loaded when a plot is drawn

    if not in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy, as above
    from matplotlib.figure import Figure  # heavy, as above
    from matplotlib.ticker import MaxNLocator  # heavy, as above

    class Plot(Figure):
        """A figure built without pyplot (nothing left open, safe in worker threads) that Jupyter shows inline
        when a cell returns it, whatever the backend."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=90)
            return buffer.getvalue()

    return SimpleNamespace(plt=plt, Plot=Plot, MaxNLocator=MaxNLocator)


MAX_MATRIX_CLASSES = 30  # beyond this a matrix is unreadable: a bar chart of the most confused pairs instead


def plots_wanted() -> bool:
    """False when NNLAB_PLOTS=0: a run's end then writes no PNGs (tests and sweeps that never look at them
    save the seconds matplotlib takes). Plots asked for by a command (`nnlab data show`) are always drawn."""
    return os.environ.get("NNLAB_PLOTS", "1").strip() != "0"


def write_run_plots(run: Run, confusion: tuple[np.ndarray, list[str]] | None = None,
                    split: str = "test") -> list[Path]:
    """plots/history.png always; plots/confusion.png (of `split`) when a confusion matrix is given."""
    written = [save(history_figure(run.history(), run.config.eval.main_metric), run.plots / "history.png")]
    if confusion is not None:
        written.append(save(confusion_figure(*confusion, split=split), run.plots / "confusion.png"))
    return written


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG (figures here are built without pyplot, so nothing is left open), atomically:
    a kill or a full disk (one DataError) leaves the old file or none, never half a PNG or a *.tmp."""
    with atomic_output(Path(path), "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    return Path(path)


def history_figure(history: list[dict[str, float]], metric: str) -> Figure:
    """Loss and the main metric per epoch, train and val side by side; whole-number epoch ticks."""
    fig = mpl().Plot(figsize=(10, 3.8), layout="tight")
    axes = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for ax, name in zip(axes, ("loss", metric), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{name}"
            values = [r.get(key, np.nan) for r in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(mpl().MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return fig


def confusion_figure(cm: np.ndarray, classes: list[str], split: str = "test") -> Figure:
    """Row-normalised confusion matrix of `split`; beyond 30 classes the most confused pairs as bars."""
    cm = np.asarray(cm, dtype=float)
    if len(classes) > MAX_MATRIX_CLASSES:
        return confused_pairs_figure(cm, classes, split)
    rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = min(16, 3 + 0.32 * n)
    fig = mpl().Plot(figsize=(size + 1.2, size), layout="tight")
    ax = fig.subplots()
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=max(5, 10 - n // 10))
    ax.set_yticks(range(n), classes, fontsize=max(5, 10 - n // 10))
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if rate[i, j] >= 0.005:
                    ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{split} confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def confused_pairs_figure(cm: np.ndarray, classes: list[str], split: str = "test", n: int = 25) -> Figure:
    """The `n` most confused (true -> predicted) pairs of `split` as horizontal bars, largest on top."""
    pairs = top_confusions(cm, classes, n=n)
    fig = mpl().Plot(figsize=(8, 1.5 + 0.3 * max(1, len(pairs))), layout="tight")
    ax = fig.subplots()
    labels = [f"{t} -> {p}" for t, p, *_ in pairs][::-1]
    counts = [c for _, _, c, *_ in pairs][::-1]
    ax.barh(range(len(pairs)), counts, color="C3")
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.xaxis.set_major_locator(mpl().MaxNLocator(integer=True))
    ax.set_xlabel("examples")
    ax.set_title(f"{split}: the {len(pairs)} most confused pairs (true -> predicted) of {len(classes)} classes")
    return fig


def top_losses_figure(images: list[np.ndarray], titles: list[str], wrong: list[bool], split: str) -> Figure:
    """fastai's plot_top_losses: the examples with the highest loss, titled predicted / true / loss /
    probability of the true class; wrong guesses in red."""
    n = len(images)
    cols = min(n, 6)
    rows = max(1, -(-n // cols))
    fig = mpl().Plot(figsize=(2.1 * cols, 2.3 * rows + 0.5), layout="tight")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title, bad in zip(axes, images, titles, wrong, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(title, fontsize=7, color="C3" if bad else "black")
    fig.suptitle(f"{split}: the {n} highest losses (predicted / true / loss / p(true))", fontsize=9)
    return fig


def lr_find_figure(lrs: list[float], losses: list[float], steepest: float, valley: float, title: str = "") -> Figure:
    """The range test: smoothed loss against a log learning rate, with the two suggestions marked."""
    fig = mpl().Plot(figsize=(6.5, 4.2), layout="tight")
    ax = fig.subplots()
    ax.plot(lrs, losses, lw=1.6)
    for lr, name, colour in ((steepest, "steepest", "C1"), (valley, "valley", "C2")):
        ax.plot([lr], [np.interp(np.log(lr), np.log(lrs), losses)], "o", color=colour, label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"LR range test{': ' + title if title else ''}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- embeddings



def plot_roc(fpr: np.ndarray, tpr: np.ndarray, report: dict[str, Any], path: Path) -> Path:
    """Verification ROC on a log FPR axis, with the EER and the TPR@FPR operating points."""
    fig, ax = mpl().plt.subplots(figsize=(5.5, 4.5))
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
    try:
        return save(fig, path)
    finally:
        mpl().plt.close(fig)


def project_2d(emb: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D projection: t-SNE (cosine) for 10 or more points, PCA below."""
    from sklearn.decomposition import PCA  # heavy (SciPy): only open-set runs draw their embeddings
    from sklearn.manifold import TSNE  # heavy (SciPy): with PCA

    if len(emb) >= 10:
        perplexity = float(min(30.0, (len(emb) - 1) / 3))
        return TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(emb), "t-SNE"
    return PCA(2, random_state=seed).fit_transform(emb) if len(emb) >= 2 else np.zeros((len(emb), 2)), "PCA"


def plot_embeddings(emb: np.ndarray, ids: np.ndarray, names: list[str], gallery: np.ndarray, path: Path,
                    seed: int = 0) -> Path:
    """Embeddings projected to 2-D, one colour per identity; gallery images drawn as stars."""
    xy, method = project_2d(emb, seed)
    uniq, code = np.unique(ids, return_inverse=True)
    cmap = mpl().plt.get_cmap("tab10" if len(uniq) <= 10 else "tab20" if len(uniq) <= 20 else "nipy_spectral")
    colours = cmap(code / max(1, len(uniq) - 1)) if len(uniq) > 20 else cmap(code % cmap.N)
    fig, ax = mpl().plt.subplots(figsize=(6.5, 5.5))
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
    try:
        return save(fig, path)
    finally:
        mpl().plt.close(fig)
