"""A grid of a run's validation drawings with the model's guesses (`nnlab data show RUN`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnlab.datasets.bundle import STROKE_KINDS
from nnlab.datasets.strokes import stroke_splits, stroke_store
from nnlab.errors import DataError, NnlabError
from nnlab.inference.submission import predict_drawings
from nnlab.runs.run import Run
from nnlab.store.show import show_grid
from nnlab.strokes.drawing import Drawing, PackedSource


def show_run_samples(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, n: int = 36,
                     split: str = "val", word: str | None = None) -> Path:
    """A PNG grid of `n` drawings of a stroke run's split (spread over the classes), each titled
    with the model's guess, and the true class where the guess is wrong. Default
    `<run>/plots/samples.png`."""
    run = Run.open(run_dir)
    d = run.config.data
    if d.kind not in STROKE_KINDS:
        raise NnlabError(f"{run.path}: a {d.kind!r} run; sample grids are for drawings ({', '.join(STROKE_KINDS)})")
    store = stroke_store(run.config)
    splits = stroke_splits(run.config, store)
    if split not in splits:
        raise NnlabError(f"split {split!r}: choose one of {', '.join(splits)}")
    idx = splits[split]
    if word is not None:
        idx = np.intersect1d(idx, store.indices_of(word))
    if not len(idx):
        raise DataError(f"{run.path}: no labelled drawings in the {split} split to show")
    idx = np.sort(idx)
    if len(idx) > n:  # the store is grouped by class: spread the picks over it
        idx = idx[np.linspace(0, len(idx) - 1, n).round().astype(np.int64)]
    source = PackedSource(store, subset=idx)  # predict_drawings frames or simplifies raw ones as trained
    guess = predict_drawings(run, source).argmax(1)
    classes = run.classes()
    drawings = []
    for d_, g in zip(store.iter_drawings(idx), guess.tolist()):
        title = classes[g] if classes[g] == d_.word else f"{classes[g]} (is {d_.word})"
        drawings.append(Drawing(strokes=d_.strokes, word=title, key_id=d_.key_id))
    right = int((guess == np.asarray(store.labels)[idx]).sum())
    out = Path(out) if out is not None else run.plots / "samples.png"
    return show_grid(drawings, n=len(drawings), out=out, credit=store.meta.get("source_kind") == "quickdraw",
                     title=f"{split} drawings: the model's guess (is: the true class, when wrong); "
                           f"{right}/{len(idx)} right")
