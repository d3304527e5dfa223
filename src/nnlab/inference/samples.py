"""A grid of a run's validation examples (drawings or images) with the model's guesses (`nnlab data show RUN`,
`--wrong` for the mistakes only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnlab.datasets.images import load_image_source
from nnlab.datasets.kinds import is_drawings
from nnlab.datasets.splits import image_splits
from nnlab.datasets.strokes import stroke_splits, stroke_store
from nnlab.errors import DataError, NnlabError
from nnlab.inference.kaggle.submission import predict_drawings
from nnlab.inference.predict import predict_images
from nnlab.runs.plots import save, top_losses_figure
from nnlab.runs.run import Run
from nnlab.store.show import show_grid
from nnlab.strokes.drawing import Drawing, PackedSource

MAX_SCANNED = 5000  # drawings predicted to find the wrong guesses (`--wrong`)


def show_run_samples(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, n: int = 36,
                     split: str = "val", word: str | None = None, wrong_only: bool = False) -> Path:
    """A PNG grid of `n` examples of a run's split (spread over the classes), each titled with the
    model's guess, and the true class where the guess is wrong (in red). `wrong_only` shows only
    mistakes. Drawing runs show drawings, image runs (digits, folders, faces...) their images.
    Default `<run>/plots/samples.png`."""
    run = Run.open(run_dir)
    out = Path(out) if out is not None else run.plots / "samples.png"
    if not is_drawings(run.config):
        return _show_images(run, out, n, split, word, wrong_only)
    store = stroke_store(run.config)
    splits = stroke_splits(run.config, store)
    if split not in splits:
        raise NnlabError(f"split {split!r}: choose one of {', '.join(splits)}")
    idx = splits[split]
    if word is not None:
        idx = np.intersect1d(idx, store.indices_of(word))
    if not len(idx):
        raise DataError(f"{run.path}: no labelled drawings in the {split} split to show")
    idx = _spread(np.sort(idx), MAX_SCANNED if wrong_only else n)  # the store is grouped by class
    guess = predict_drawings(run, PackedSource(store, subset=idx)).argmax(1)
    truth = np.asarray(store.labels)[idx]
    scanned, right = len(idx), int((guess == truth).sum())
    if wrong_only:
        keep = _spread(np.flatnonzero(guess != truth), n)
        idx, guess, truth = idx[keep], guess[keep], truth[keep]
        if not len(idx):
            raise DataError(f"{run.path}: no wrong guesses among {scanned:,} {split} drawings")
    classes = run.classes()
    drawings = []
    for d_, g in zip(store.iter_drawings(idx), guess.tolist()):
        title = classes[g] if classes[g] == d_.word else f"{classes[g]} (is {d_.word})"
        drawings.append(Drawing(strokes=d_.strokes, word=title, key_id=d_.key_id))
    return show_grid(drawings, n=len(drawings), out=out, credit=store.meta.get("source_kind") == "quickdraw",
                     wrong=(guess != truth).tolist(), title=_title(split, wrong_only, right, scanned, "drawings"))


def _spread(positions: np.ndarray, n: int) -> np.ndarray:
    """At most n of `positions`, evenly spread (a class-grouped order then covers every class)."""
    if len(positions) <= n:
        return positions
    return positions[np.linspace(0, len(positions) - 1, n).round().astype(np.int64)]


def _title(split: str, wrong_only: bool, right: int, scanned: int, what: str) -> str:
    head = f"{split} {what} the model got wrong" if wrong_only else f"{split} {what}: the model's guess"
    return f"{head} (is: the true class, when wrong); {right}/{scanned} right"


def _show_images(run: Run, out: Path, n: int, split: str, word: str | None, wrong_only: bool) -> Path:
    """The image-run grid: the split's images (from the run's splits.json) with guess / true label."""
    source = load_image_source(run.config)
    splits = image_splits(run.config, source, run.path)
    if split not in splits or not len(splits[split]):
        have = ", ".join(k for k, v in splits.items() if len(v))
        raise NnlabError(f"split {split!r} is empty or unknown (have: {have})")
    classes = run.classes()
    idx = np.sort(splits[split])
    if word is not None:
        if word not in classes:
            raise DataError(f"--class {word!r}: not a class of {run.path}")
        idx = idx[source.labels[idx] == classes.index(word)]
    idx = _spread(idx, MAX_SCANNED if wrong_only else n)
    images = [source.image(int(i)) for i in idx]
    guess = predict_images(run, images).argmax(1)
    truth = source.labels[idx]
    scanned, right = len(idx), int((guess == truth).sum())
    keep = _spread(np.flatnonzero(guess != truth), n) if wrong_only else np.arange(len(idx))
    if not len(keep):
        raise DataError(f"{run.path}: no wrong guesses among {scanned:,} {split} images")
    titles = [classes[guess[k]] if guess[k] == truth[k] else f"{classes[guess[k]]} (is {classes[truth[k]]})"
              for k in keep]
    fig = top_losses_figure([images[k] for k in keep], titles, [bool(guess[k] != truth[k]) for k in keep], split)
    fig.suptitle(_title(split, wrong_only, right, scanned, "images"), fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, out)
