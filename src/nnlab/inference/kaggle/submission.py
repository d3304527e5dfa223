"""Kaggle submissions from trained stroke runs (one run or a weighted ensemble).

    predict_submission(runs, "test_simplified.csv", "submission.csv", tta="flip")

reads every row of the input (`drawing_rows`), renders the drawings with each run's own settings
(`to_model_input`, the one preprocessing of drawings), averages the runs' probabilities and writes
Kaggle's format::

    key_id,word
    9000003627287624,The_Eiffel_Tower airplane donut

with exactly one row per input drawing, in input order. A row that cannot be parsed keeps its
place: it gets the three classes most frequent in the training split, and the returned warning
counts it with its line number.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import torch

from nnlab import metrics
from nnlab.datasets.strokes import drawing_input, stroke_splits, stroke_store
from nnlab.device import pick_device
from nnlab.errors import DataError, NnlabError
from nnlab.evaluation.proba import batch_proba
from nnlab.fileio import disk_full_guard
from nnlab.inference.kaggle.balance import balanced_top_k
from nnlab.inference.kaggle.drawing_rows import DrawingRows, read_drawing_rows
from nnlab.inference.kaggle.ensemble import ensemble_proba, parse_weights
from nnlab.progress import progress
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained, raw_handling
from nnlab.strokes.drawing import PackedSource, StrokeBatch, StrokeSource
from nnlab.strokes.simplify import to_canvas
from nnlab.strokes.vocabulary import word_to_label

TTA_CHOICES = ("flip",)
BATCH_SIZE = 512  # drawings rendered and predicted at a time

def flip_batch(batch: StrokeBatch) -> StrokeBatch:
    """The drawings mirrored left-right in the 0..255 canvas (x -> 255 - x)."""
    pts = np.array(batch.points, copy=True)
    pts[:, 0] = 255 - pts[:, 0]
    return StrokeBatch(points=pts, stroke_ptr=batch.stroke_ptr, drawing_ptr=batch.drawing_ptr, time=batch.time)


@torch.no_grad()
def predict_drawings(run: Run, source: StrokeSource, tta: str | None = None,
                     batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Softmax probabilities (N, classes) of a run's best checkpoint for every drawing of `source`,
    rendered with the run's own image size, encoding, line width and padding."""
    check_tta(tta)
    d = run.config.data
    source = PackedSource(source, partial(to_canvas, raw=raw_handling(run)))  # raw drawings as in training
    device = pick_device("auto")
    model = load_trained(run, device)

    def proba(batch: StrokeBatch) -> torch.Tensor:
        return batch_proba(model, drawing_input(batch, d), device, run.config.train.amp)

    out = np.zeros((len(source), len(run.classes())), np.float32)
    starts = range(0, len(source), batch_size)
    for a in progress(starts, desc=f"predict {run.path.name}", total=len(starts), unit="batch"):
        b = min(a + batch_size, len(source))
        batch = source.batch(np.arange(a, b))
        p = proba(batch)
        if tta == "flip":
            p = (p + proba(flip_batch(batch))) / 2
        out[a:b] = p.numpy()
    return out


def check_tta(tta: str | None) -> None:
    if tta is not None and tta not in TTA_CHOICES:
        raise NnlabError(f"--tta {tta!r}: choose one of {', '.join(TTA_CHOICES)}")


def train_class_counts(run: Run) -> np.ndarray:
    """Drawings per class in the run's training split (from metrics.json, else recomputed)."""
    metrics = run.path / "metrics.json"
    if metrics.is_file():
        counts = json.loads(metrics.read_text()).get("data", {}).get("train_counts")
        if counts:
            return np.asarray(counts, np.int64)
    store = stroke_store(run.config)
    labels = np.asarray(store.labels)[stroke_splits(run.config, store)["train"]].astype(np.int64)
    return np.bincount(labels, minlength=len(run.classes()))


def predict_submission(runs: list[Run], input_path: str | os.PathLike, out: str | os.PathLike, top_k: int = 3,
                       tta: str | None = None, weights: str | None = None, balance: bool = False,
                       batch_size: int = BATCH_SIZE, strict: bool = False) -> tuple[int, str | None]:
    """Write a Kaggle submission (``key_id,word``, the top_k labels space-separated) for every
    drawing of `input_path`, with one run or a weighted ensemble of runs.

    `balance` caps every class's first choices at its share of the parsed rows (`inference.kaggle.balance`):
    valid only for a test set known to be balanced, as Kaggle's is.

    Returns (rows written, the messages to show: a warning naming the rows that could not be parsed and
    where a truncated or corrupt file stops, what balancing changed; or None). strict: any input problem
    is an error (DataError) and nothing is written."""
    check_tta(tta)
    parse_weights(weights, len(runs))  # a wrong --weights fails before any work
    if top_k < 1:
        raise NnlabError(f"--top-k must be >= 1, got {top_k}")
    rows = read_drawing_rows(input_path)
    notes = input_problems(Path(input_path), rows)
    if strict and notes:
        raise DataError(notes[0] + " (--strict)")
    classes = runs[0].classes()
    labels = np.array([word_to_label(c) for c in classes], dtype=object)
    k = min(top_k, len(classes))
    top = np.zeros((len(rows), k), np.int64)
    if len(rows.parsed):
        probs = ensemble_proba(runs, lambda r: predict_drawings(r, rows.drawings, tta, batch_size), weights)
        top[rows.parsed] = metrics.top_k(probs, k)
    balance_note = None
    if balance and len(rows.parsed):
        balanced = balanced_top_k(probs, k)
        top[rows.parsed] = balanced.top
        balance_note = (f"balanced: at most {balanced.share} first choices per class; {balanced.changed_top} of "
                        f"{len(rows.parsed)} rows changed their top {k} ({balanced.changed_first} first choices)")
    warnings = [f"warning: {notes[0]}"] if rows.trouble else []  # where the file stops comes first
    if rows.swallowed:
        warnings.append(f"warning: {swallowed_note(Path(input_path), rows)}")
    if rows.lost:
        warnings.append(f"warning: {input_path}: {rows.lost} records could not be read "
                        f"({', '.join(f'{r} {n}' for r, n in rows.reasons.items())}) and have no row")
    if rows.bad:
        counts = train_class_counts(runs[0])
        fallback = metrics.top_k(counts[None, :], k)[0]
        missing = np.ones(len(rows), bool)
        missing[rows.parsed] = False
        top[missing] = fallback
        warnings.append(bad_rows_warning(Path(input_path), rows, [classes[j] for j in fallback]))
    warning = "\n".join(warnings) or None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with disk_full_guard(out, tmp):
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["key_id", "word"])
            for key, guess in zip(rows.ids, labels[top].tolist()):
                writer.writerow([key, " ".join(guess)])
        os.replace(tmp, out)
    messages = [m for m in (warning, balance_note) if m]
    return len(rows), "\n".join(messages) if messages else None


def _stop_note(path: Path, rows: DrawingRows) -> str:
    reason, line = rows.trouble
    what = "is truncated" if reason == "truncated_file" else "is corrupt (its compressed stream)"
    return f"{path}: the file {what} " + (f"after line {line - 1}" if line > 1 else "from its first line")


def input_problems(path: Path, rows: DrawingRows) -> list[str]:
    """One line per problem of the input: where a truncated or corrupt file stops, rows or records
    that could not be parsed (for --strict, and the warnings)."""
    notes = []
    if rows.trouble:
        notes.append(_stop_note(path, rows) + "; the rows after it are missing from the submission")
    if rows.swallowed:
        notes.append(swallowed_note(path, rows))
    if rows.bad or rows.lost:
        n = len(rows.bad) or rows.lost
        why = ", ".join(f"{r} {k}" for r, k in rows.reasons.items() if r not in ("truncated_file", "corrupt_file"))
        if why:
            notes.append(f"{path}: {n} {rows.unit}s could not be parsed ({why})")
    return notes


def swallowed_note(path: Path, rows: DrawingRows, show: int = 5) -> str:
    """Where quotes left open took in lines that are rows of their own, with those rows' key_ids."""
    opened = sorted({q for q, _, _ in rows.swallowed})
    keys = [k for _, _, k in rows.swallowed]
    where = ", ".join(map(str, opened[:show])) + (", ..." if len(opened) > show else "")
    listed = ", ".join(f"{k} (line {n})" for _, n, k in rows.swallowed[:show]) + (", ..." if len(keys) > show else "")
    return (f"{path}: a quote opened on line {where} is not closed on its line and takes in "
            f"{len(keys)} row{'s' if len(keys) != 1 else ''} of {'their' if len(keys) != 1 else 'its'} own: "
            f"key_id {listed}; each keeps its place in the submission as a row that could not be parsed")


def bad_rows_warning(path: Path, rows: DrawingRows, fallback: list[str], show: int = 10) -> str:
    """One paragraph: how many rows did not parse, why, where, and what they were given."""
    where = ", ".join(str(line) for line in rows.bad[:show]) + (", ..." if len(rows.bad) > show else "")
    why = ", ".join(f"{r} {n}" for r, n in Counter(rows.reasons).most_common()) or "unreadable"
    no_id = sum(1 for i in rows.ids if i == "")
    text = (f"warning: {len(rows.bad)} of {len(rows)} drawings in {path} could not be parsed ({why}; "
            f"{rows.unit}s {where}); their rows hold the most frequent training classes "
            f"({' '.join(word_to_label(w) for w in fallback)})")
    if no_id:
        text += f"; {no_id} of them have no readable key_id (left empty)"
    return text
