"""A labelled grid of drawings (matplotlib lines, no renderer needed)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.store.format import StrokeStore
from nnlab.strokes.drawing import Drawing

GOOGLE_CREDIT = ("Drawings: Quick, Draw! dataset by Google, CC BY 4.0 "
                 "(github.com/googlecreativelab/quickdraw-dataset)")


def show_grid(drawings_or_store, n: int = 36, word: str | None = None,
              out: str | os.PathLike = "grid.png", *, credit: bool | None = None,
              title: str | None = None, wrong: Sequence[bool] | None = None) -> Path:
    """Save a grid of `n` drawings (spread over the store, or of class `word`) with their words.

    A StrokeStore whose meta says its drawings come from Quick, Draw! gets Google's credit in
    the figure (override with `credit`). `wrong[k]` titles drawing k in red (a wrong guess).
    Returns the PNG path."""
    if n < 1:
        raise DataError(f"show: n must be >= 1, got {n}")
    if isinstance(drawings_or_store, StrokeStore):
        store = drawings_or_store
        idx = store.indices_of(word) if word is not None else np.arange(len(store))
        if len(idx) > n:  # spread over the store (or the class) rather than its first drawings
            idx = idx[np.linspace(0, len(idx) - 1, n).round().astype(np.int64)]
        drawings: Sequence[Drawing] = list(store.iter_drawings(idx))
        if credit is None:
            credit = store.meta.get("source_kind") == "quickdraw"
    else:
        drawings = [d for d in drawings_or_store if word is None or d.word == word][:n]
        credit = bool(credit)
    if not drawings:
        raise DataError(f"show: no drawings{f' of class {word!r}' if word else ''} to show")
    cols = math.ceil(math.sqrt(len(drawings)))
    rows = math.ceil(len(drawings) / cols)
    from matplotlib.figure import Figure  # heavy (about 0.7 s of CPU): loaded when a grid is drawn

    fig = Figure(figsize=(1.6 * cols, 1.75 * rows + (0.3 if credit else 0)))  # no pyplot: nothing left open
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, (ax, d) in enumerate(zip(axes.ravel(), drawings)):
        for s in d.strokes:
            s = np.asarray(s, dtype=float)
            ax.plot(s[:, 0], s[:, 1], color="black", linewidth=1.0, solid_capstyle="round")
        ax.set_aspect("equal")
        ax.invert_yaxis()  # screen coordinates: y grows downwards
        label = d.word if d.word is not None else "(unlabelled)"
        ax.set_title(label if d.recognized else f"{label} (unrec.)", fontsize=6,
                     color="C3" if wrong is not None and wrong[k] else "black")
    if title:
        fig.suptitle(title, fontsize=10)
    if credit:
        fig.text(0.5, 0.005, GOOGLE_CREDIT, ha="center", va="bottom", fontsize=6, color="0.3")
    fig.tight_layout(rect=(0, 0.03 if credit else 0, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Copyright": GOOGLE_CREDIT} if credit else None)
    return out
