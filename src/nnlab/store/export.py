"""`export`: a store's drawings back out as Google ndjson, a Kaggle CSV, Google .bin or sketch-rnn .npz."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.ingest.sketchrnn import write_sketchrnn
from nnlab.ingest.writers import write_bin, write_csv, write_ndjson
from nnlab.progress import progress
from nnlab.store.format import StrokeStore
from nnlab.strokes.stroke3 import packed_to_stroke3


def export(store: StrokeStore, out: str | os.PathLike, fmt: str = "ndjson") -> int:
    """Write every drawing of a store as Google ndjson, a Kaggle CSV (test_simplified columns
    when no drawing has a word), Google .bin or sketch-rnn .npz files (`export_sketchrnn`);
    re-preparing the output gives the same store (sketch-rnn's: the same drawings and splits)."""
    out = Path(out)
    fmt = fmt.lower()
    if fmt == "sketchrnn":
        return export_sketchrnn(store, out)
    bar = progress(store.iter_drawings(), total=len(store), desc="export", unit="drawing")
    if fmt == "ndjson":
        return write_ndjson(bar, out)
    if fmt == "csv":
        labels = np.asarray(store.labels)
        unlabelled = int((labels < 0).sum())
        if 0 < unlabelled < len(store):
            raise DataError(f"{unlabelled} of {len(store)} drawings have no word: Kaggle's CSVs are "
                            "either all labelled (train) or all unlabelled (test); export as ndjson")
        return write_csv(bar, out, test=len(store) > 0 and unlabelled == len(store))
    if fmt == "bin":
        if store.kind != "simplified":
            raise DataError("the .bin format holds simplified drawings only; prepare with --simplify")
        return write_bin(bar, out)
    raise DataError(f"unknown export format {fmt!r}: use ndjson, csv, bin or sketchrnn")


def export_sketchrnn(store: StrokeStore, out: Path, val_fraction: float = 0.1, test_fraction: float = 0.0) -> int:
    """One sketch-rnn ``<word>.npz`` per class in the folder `out` (absent or empty; a name ending in
    .npz: that file, for a store of one class): stroke-3 int16 drawings under train/valid/test, the
    store's own split (`StrokeStore.split`: the source's where it gave one, else by key_id hash with
    these fractions). Simplified, labelled drawings only."""
    if store.kind != "simplified":
        raise DataError("sketch-rnn files hold simplified drawings only; prepare with --simplify")
    labels = np.asarray(store.labels)
    if (labels < 0).any():
        raise DataError(f"{int((labels < 0).sum())} drawings have no word: sketch-rnn files are one word each; "
                        "export as ndjson")
    present = [k for k, c in enumerate(np.bincount(labels.astype(np.int64), minlength=len(store.classes))) if c]
    single = out.name.lower().endswith(".npz")
    if single and len(present) != 1:
        raise DataError(f"--out {out}: the store holds {len(present)} classes; give a folder (one <word>.npz each)")
    if not single:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DataError(f"--out {out}: exists and is not an empty folder; choose a new or empty one")
        out.mkdir(parents=True, exist_ok=True)
    splits = store.split(val_fraction, test_fraction)
    n = 0
    for k in progress(present, desc="export", unit="word"):
        per_split = {}
        for name, idx in splits.items():
            idx = idx[labels[idx] == k]
            b = store.batch(idx)
            per_split[name] = packed_to_stroke3(b.points, b.stroke_ptr, b.drawing_ptr)
        n += write_sketchrnn(out if single else out / f"{store.classes[k]}.npz", per_split)
    return n
