"""Quick, Draw! predictions: Kaggle submissions from trained stroke runs, and a grid of guesses.

    predict_submission(runs, "test_simplified.csv", "submission.csv", tta="flip")

reads drawings from a Kaggle CSV (``test_simplified.csv``, or any train CSV), Google ndjson
(simplified, or raw: simplified on the fly with Google's algorithm) or a stroke store, renders
them with each run's own settings (`to_model_input`, the one preprocessing of drawings),
averages the runs' probabilities (weighted) and writes Kaggle's format::

    key_id,word
    9000003627287624,The_Eiffel_Tower airplane donut

with exactly one row per input drawing, in input order. A row that cannot be parsed keeps its
place: it gets the three classes most frequent in the training split, and the returned warning
counts it with its line number. The ids of the rows come from one pass of the fast readers
(`nnlab.data.quickdraw.iter_chunks`, which skip bad rows) matched by line number against a plain
enumeration of the file's rows, so a skipped row can never shift the predictions below it.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnlab.data.drawing import Drawing, StrokeBatch
from nnlab.data.quickdraw import ParsedChunk, SkipStats, detect_format, iter_chunks, word_to_label
from nnlab.data.simplify import simplify_batch
from nnlab.errors import DataError, NnlabError
from nnlab.progress import progress
from nnlab.runs import Run

TTA_CHOICES = ("flip",)
BATCH_SIZE = 512  # drawings rendered and predicted at a time
_BLANK = b" \t\r\n"  # a line of only these is no row (as the readers see it)


# --------------------------------------------------------------------------------------------
# Inputs: the drawings that parsed, and where each input row goes
# --------------------------------------------------------------------------------------------


@dataclass
class DrawingRows:
    """Every row of an input, in order: its id, and for the rows that parsed, their drawing.

    `drawings` holds the parsed drawings (simplified, 0..255) in row order; `parsed[k]` is the
    row of drawing k. `bad` lists the line of each row that did not parse and `reasons` counts
    the readers' reasons for rejecting rows."""

    ids: list[str]
    drawings: StrokeSource
    parsed: np.ndarray  # (M,) int64 row positions, increasing
    bad: list[int]
    reasons: dict[str, int]
    unit: str = "line"
    lost: int = 0  # .bin records that could not be read (no line structure to give them a row)

    def __len__(self) -> int:
        return len(self.ids)


class StrokeSource:
    """Drawings packed flat (a StrokeBatch) or a store, served as contiguous simplified batches."""

    def __init__(self, batch_of: Callable[[int, int], StrokeBatch], n: int) -> None:
        self._batch_of = batch_of
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, start: int, stop: int) -> StrokeBatch:
        return self._batch_of(start, stop)

    @classmethod
    def packed(cls, batch: StrokeBatch) -> StrokeSource:
        return cls(lambda a, b: slice_batch(batch, a, b), len(batch))


def slice_batch(batch: StrokeBatch, start: int, stop: int) -> StrokeBatch:
    """Drawings start..stop-1 of a batch as a batch of their own (views, pointers rebased)."""
    s0, s1 = int(batch.drawing_ptr[start]), int(batch.drawing_ptr[stop])
    p0, p1 = int(batch.stroke_ptr[s0]), int(batch.stroke_ptr[s1])
    return StrokeBatch(points=batch.points[p0:p1], stroke_ptr=batch.stroke_ptr[s0:s1 + 1] - p0,
                       drawing_ptr=batch.drawing_ptr[start:stop + 1] - s0,
                       time=None if batch.time is None else batch.time[p0:p1])


def read_drawing_rows(path: str | os.PathLike) -> DrawingRows:
    """Every drawing row of a Kaggle CSV, Google ndjson or .bin file (gzip or not), or a store."""
    path = Path(path)
    if path.is_dir():
        return _store_rows(path)
    if not path.is_file():
        raise DataError(f"{path}: input not found (a Kaggle CSV, a Google ndjson file or a stroke store)")
    fmt = detect_format(path)
    stats = SkipStats()
    chunks = list(iter_chunks(path, on_bad="skip", stats=stats, fmt=fmt))
    good_lines = np.concatenate([c.lines for c in chunks]) if chunks else np.zeros(0, np.int64)
    packed = _pack_chunks(chunks)
    if fmt == "bin":  # length-prefixed records: past a bad one nothing can be found again
        return DrawingRows([str(k) for c in chunks for k in c.key_ids.tolist()], StrokeSource.packed(packed),
                           np.arange(len(good_lines)), [], stats.as_dict(), unit="record", lost=stats.total())
    row_lines, bad_ids = _enumerate_rows(path, fmt, set(good_lines.tolist()))
    pos = np.searchsorted(row_lines, good_lines)
    if len(good_lines) and (pos.max() >= len(row_lines) or not np.array_equal(row_lines[pos], good_lines)):
        raise DataError(f"{path}: the rows read do not line up with the file's lines; "
                        "cannot write a submission safely")
    ids = [""] * len(row_lines)
    for k, key in zip(pos.tolist(), (int(v) for c in chunks for v in c.key_ids)):
        ids[k] = str(key)
    bad = []
    for k in np.setdiff1d(np.arange(len(row_lines)), pos).tolist():
        line = int(row_lines[k])
        ids[k] = bad_ids.get(line, "")
        bad.append(line)
    return DrawingRows(ids, StrokeSource.packed(packed), pos.astype(np.int64), bad, stats.as_dict())


def _store_rows(path: Path) -> DrawingRows:
    from nnlab.data.store import StrokeStore

    store = StrokeStore.open(path)
    source = StrokeSource(lambda a, b: simplify_batch(store.batch(np.arange(a, b))), len(store))
    return DrawingRows([str(k) for k in np.asarray(store.key_ids).tolist()], source,
                       np.arange(len(store), dtype=np.int64), [], {}, unit="drawing")


def _pack_chunks(chunks: list[ParsedChunk]) -> StrokeBatch:
    """The chunks' drawings as one simplified StrokeBatch (raw ones simplified chunk by chunk)."""
    parts = [c.simplified() for c in chunks]
    stroke_len = np.concatenate([np.zeros(0, np.int64)] + [c.stroke_len for c in parts])
    num_strokes = np.concatenate([np.zeros(0, np.int64)] + [c.num_strokes for c in parts])
    stroke_ptr = np.zeros(len(stroke_len) + 1, np.int64)
    np.cumsum(stroke_len, out=stroke_ptr[1:])
    drawing_ptr = np.zeros(len(num_strokes) + 1, np.int64)
    np.cumsum(num_strokes, out=drawing_ptr[1:])
    return StrokeBatch(points=np.concatenate([np.zeros((0, 2), np.uint8)] + [c.points for c in parts]),
                       stroke_ptr=stroke_ptr, drawing_ptr=drawing_ptr)


def _open_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (gzip by magic bytes, as the readers do); stops quietly where the
    stream is cut or corrupt (the readers have counted that row already)."""
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    with opener(path, "rb") as f:
        try:
            yield from f
        except (EOFError, OSError, gzip.BadGzipFile, ValueError):
            return


def _enumerate_rows(path: Path, fmt: str, good: set[int]) -> tuple[np.ndarray, dict[int, str]]:
    """The line of every row (non-blank line; a CSV's first line is its header) and, for the
    rows the readers rejected, the key_id as written (best effort, "" when there is none)."""
    lines: list[int] = []
    ids: dict[int, str] = {}
    key_col = None
    for n, raw in enumerate(_open_lines(path), 1):
        if fmt == "csv" and n == 1:
            header = next(csv.reader([raw.decode("utf-8", "replace")]), [])
            key_col = header.index("key_id") if "key_id" in header else None
            continue
        if not raw.strip(_BLANK):
            continue
        lines.append(n)
        if n not in good:
            text = raw.decode("utf-8", "replace")
            ids[n] = _csv_key_id(text, key_col) if fmt == "csv" else _json_key_id(text)
    return np.asarray(lines, np.int64), ids


def _csv_key_id(text: str, col: int | None) -> str:
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        fields = []
    if col is not None and col < len(fields):
        return fields[col].strip()
    return ""


_KEY_RE = re.compile(r'"key_id"\s*:\s*"?(-?\d+)')


def _json_key_id(text: str) -> str:
    try:
        value = json.loads(text).get("key_id")
        return "" if value is None else str(value)
    except (ValueError, AttributeError):
        m = _KEY_RE.search(text)
        return m.group(1) if m else ""


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


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
    from nnlab.data.stroke_dataset import to_model_input
    from nnlab.predict import load_trained
    from nnlab.train import autocast, pick_device

    check_tta(tta)
    d = run.config.data
    device = pick_device("auto")
    model = load_trained(run, device)

    def proba(batch: StrokeBatch) -> torch.Tensor:
        x = to_model_input(batch, size=d.image_size, encoding=d.encoding, line_width=d.line_width,
                           padding=d.padding).to(device)
        with autocast(device, run.config.train.amp):
            return torch.softmax(model(x).float(), 1).cpu()

    out = np.zeros((len(source), len(run.classes())), np.float32)
    starts = range(0, len(source), batch_size)
    for a in progress(starts, desc=f"predict {run.path.name}", total=len(starts), unit="batch"):
        b = min(a + batch_size, len(source))
        batch = source.batch(a, b)
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
    from nnlab.data.stroke_dataset import stroke_splits, stroke_store

    store = stroke_store(run.config)
    labels = np.asarray(store.labels)[stroke_splits(run.config, store)["train"]].astype(np.int64)
    return np.bincount(labels, minlength=len(run.classes()))


def predict_submission(runs: list[Run], input_path: str | os.PathLike, out: str | os.PathLike, top_k: int = 3,
                       tta: str | None = None, weights: str | None = None,
                       batch_size: int = BATCH_SIZE) -> tuple[int, str | None]:
    """Write a Kaggle submission (``key_id,word``, the top_k labels space-separated) for every
    drawing of `input_path`, with one run or a weighted ensemble of runs.

    Returns (rows written, a warning naming the rows that could not be parsed, or None)."""
    from nnlab.predict import ensemble_proba, parse_weights

    check_tta(tta)
    parse_weights(weights, len(runs))  # a wrong --weights fails before any work
    if top_k < 1:
        raise NnlabError(f"--top-k must be >= 1, got {top_k}")
    rows = read_drawing_rows(input_path)
    classes = runs[0].classes()
    labels = np.array([word_to_label(c) for c in classes], dtype=object)
    k = min(top_k, len(classes))
    top = np.zeros((len(rows), k), np.int64)
    if len(rows.parsed):
        probs = ensemble_proba(runs, lambda r: predict_drawings(r, rows.drawings, tta, batch_size), weights)
        top[rows.parsed] = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    warning = None
    if rows.lost:
        warning = (f"warning: {input_path}: {rows.lost} records could not be read "
                   f"({', '.join(f'{r} {n}' for r, n in rows.reasons.items())}) and have no row")
    if rows.bad:
        counts = train_class_counts(runs[0])
        fallback = np.argsort(-counts, kind="stable")[:k]
        missing = np.ones(len(rows), bool)
        missing[rows.parsed] = False
        top[missing] = fallback
        warning = bad_rows_warning(Path(input_path), rows, [classes[j] for j in fallback])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["key_id", "word"])
        for key, guess in zip(rows.ids, labels[top].tolist()):
            writer.writerow([key, " ".join(guess)])
    os.replace(tmp, out)
    return len(rows), warning


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


# --------------------------------------------------------------------------------------------
# A grid of validation drawings with the model's guesses
# --------------------------------------------------------------------------------------------


def show_run_samples(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, n: int = 36,
                     split: str = "val", word: str | None = None) -> Path:
    """A PNG grid of `n` drawings of a stroke run's split (spread over the classes), each titled
    with the model's guess, and the true class where the guess is wrong. Default
    `<run>/plots/samples.png`."""
    from nnlab.data.loaders import STROKE_KINDS
    from nnlab.data.show import show_grid
    from nnlab.data.stroke_dataset import stroke_splits, stroke_store

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
    source = StrokeSource(lambda a, b: simplify_batch(store.batch(idx[a:b])), len(idx))
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
