"""`export`: a store's drawings back out as Google ndjson, a Kaggle CSV or Google .bin."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.ingest.writers import write_bin, write_csv, write_ndjson
from nnlab.progress import progress
from nnlab.store.format import StrokeStore


def export(store: StrokeStore, out: str | os.PathLike, fmt: str = "ndjson") -> int:
    """Write every drawing of a store as Google ndjson, a Kaggle CSV (test_simplified columns
    when no drawing has a word) or Google .bin; re-preparing the output gives the same store."""
    out = Path(out)
    fmt = fmt.lower()
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
    raise DataError(f"unknown export format {fmt!r}: use ndjson, csv or bin")
