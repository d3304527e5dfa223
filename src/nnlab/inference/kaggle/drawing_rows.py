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
(`nnlab.ingest.chunks.iter_chunks`, which skip bad rows) matched by line number against a plain
enumeration of the file's rows, so a skipped row can never shift the predictions below it.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.fileio import is_gzip
from nnlab.ingest.chunks import ParsedChunk, iter_chunks
from nnlab.ingest.reasons import SkipStats
from nnlab.ingest.sources import MAX_LINE_BYTES, detect_format
from nnlab.store.format import StrokeStore
from nnlab.strokes.drawing import PackedSource, StrokeBatch, StrokeSource

_BLANK = b" \t\r\n"  # a line of only these is no row (as the readers see it)

# --------------------------------------------------------------------------------------------
# Inputs: the drawings that parsed, and where each input row goes
# --------------------------------------------------------------------------------------------


@dataclass
class DrawingRows:
    """Every row of an input, in order: its id, and for the rows that parsed, their drawing.

    `drawings` holds the parsed drawings in row order (simplified ones as uint8, raw ones as
    float32 with time, framed or simplified later as each run was trained); `parsed[k]` is the
    row of drawing k. `bad` lists the line of each row that did not parse and `reasons` counts
    the readers' reasons for rejecting rows."""

    ids: list[str]
    drawings: StrokeSource
    parsed: np.ndarray  # (M,) int64 row positions, increasing
    bad: list[int]
    reasons: dict[str, int]
    unit: str = "line"
    lost: int = 0  # .bin records that could not be read (no line structure to give them a row)
    trouble: tuple[str, int] | None = None  # ("truncated_file" | "corrupt_file", line where it stops)
    #: (line of the opening quote, line taken in, its key_id): a CSV line inside another row's quoted field
    #: that is a row by itself (an unclosed quote); each keeps its own row, as a bad one
    swallowed: list[tuple[int, int, str]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


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
    trouble = next(((e["reason"], e["line"]) for e in stats.examples
                    if e["reason"] in ("truncated_file", "corrupt_file")), None)
    if fmt == "bin":  # length-prefixed records: past a bad one nothing can be found again
        return DrawingRows([str(k) for c in chunks for k in c.key_ids.tolist()], PackedSource(packed),
                           np.arange(len(good_lines)), [], stats.as_dict(), unit="record", lost=stats.total(),
                           trouble=trouble)
    row_lines, bad_ids, swallowed = _enumerate_rows(path, fmt, set(good_lines.tolist()))
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
    reasons = stats.as_dict() | ({"in_open_quote": len(swallowed)} if swallowed else {})
    return DrawingRows(ids, PackedSource(packed), pos.astype(np.int64), bad, reasons, trouble=trouble,
                       swallowed=swallowed)


def _store_rows(path: Path) -> DrawingRows:
    store = StrokeStore.open(path)
    source = PackedSource(store)  # raw stores stay raw: each run frames or simplifies them as it was trained
    return DrawingRows([str(k) for k in np.asarray(store.key_ids).tolist()], source,
                       np.arange(len(store), dtype=np.int64), [], {}, unit="drawing")


def _pack_chunks(chunks: list[ParsedChunk]) -> StrokeBatch:
    """The chunks' drawings as one StrokeBatch: simplified ones as uint8, raw ones as float32 points with
    time, as a raw store holds them (each run frames or simplifies raw drawings as it was trained)."""
    raw = bool(chunks) and chunks[0].kind == "raw"  # one kind per file (mixing is a bad row)
    stroke_len = np.concatenate([np.zeros(0, np.int64)] + [c.stroke_len for c in chunks])
    num_strokes = np.concatenate([np.zeros(0, np.int64)] + [c.num_strokes for c in chunks])
    stroke_ptr = np.zeros(len(stroke_len) + 1, np.int64)
    np.cumsum(stroke_len, out=stroke_ptr[1:])
    drawing_ptr = np.zeros(len(num_strokes) + 1, np.int64)
    np.cumsum(num_strokes, out=drawing_ptr[1:])
    dtype = np.float32 if raw else np.uint8
    points = np.concatenate([np.zeros((0, 2), dtype)] + [c.points.astype(dtype, copy=False) for c in chunks])
    time = np.concatenate([c.time for c in chunks]).astype(np.float32) if raw else None
    return StrokeBatch(points=points, stroke_ptr=stroke_ptr, drawing_ptr=drawing_ptr, time=time)


def _open_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (gzip by magic bytes, as the readers do); stops quietly where the
    stream is cut or corrupt (the readers have counted that row already). A line over
    MAX_LINE_BYTES is cut to its first 4 KB (the readers count it as line_too_long)."""
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as f:
        try:
            while line := f.readline(MAX_LINE_BYTES + 1):
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass
                    line = line[:4096] + b"\n"
                yield line
        except (EOFError, OSError, gzip.BadGzipFile, ValueError, zlib.error):
            return


def _enumerate_rows(path: Path, fmt: str, good: set[int]) -> tuple[np.ndarray, dict[int, str], list]:
    """The line of every row (non-blank line; a CSV's first line is its header), for the rows the readers
    rejected the key_id as written (best effort, "" when there is none), and a CSV's swallowed rows."""
    if fmt == "csv":
        return _enumerate_csv_rows(path, good)
    lines: list[int] = []
    ids: dict[int, str] = {}
    for n, raw in enumerate(_open_lines(path), 1):
        if not raw.strip(_BLANK):
            continue
        lines.append(n)
        if n not in good:
            ids[n] = _json_key_id(raw.decode("utf-8-sig" if n == 1 else "utf-8", "replace"))
    return np.asarray(lines, np.int64), ids, []


def _enumerate_csv_rows(path: Path, good: set[int]) -> tuple[np.ndarray, dict[int, str], list]:
    """`_enumerate_rows` of a CSV, by Python's csv module: a row starts on the line after the
    previous row's last line (RFC 4180: a quoted field may hold newlines). A quote left open swallows
    the lines up to the next quote: a line taken in that is a whole row by itself (`_row_key`) is given
    back its own row, and listed in the third value, so that no
    key_id goes missing from a submission."""
    counted = [0]
    pending: list[str] = []  # the lines of the row being read

    def texts() -> Iterator[str]:
        for raw in _open_lines(path):
            counted[0] += 1
            text = raw.decode("utf-8-sig" if counted[0] == 1 else "utf-8", "replace")
            pending.append(text)
            yield text

    reader = csv.reader(texts())
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    lines: list[int] = []
    ids: dict[int, str] = {}
    swallowed: list[tuple[int, int, str]] = []
    key_col, width = None, 0
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, counted[0]
            taken = pending[-(end - start + 1):]
            pending.clear()
            if key_col is None and start == 1:
                header = [c.strip() for c in fields]
                key_col, width = (header.index("key_id") if "key_id" in header else -1), len(header)
                continue
            if not any(c.strip(" \t\r\n") for c in fields):
                continue
            lines.append(start)
            if start not in good:
                ids[start] = fields[key_col].strip() if 0 <= key_col < len(fields) else ""
            for n, text in enumerate(taken[1:], start + 1):  # a row of several lines
                key = _row_key(text, key_col, width)
                if key is not None:
                    lines.append(n)
                    ids[n] = key
                    swallowed.append((start, n, key))
    except csv.Error:  # e.g. a NUL byte: the readers have counted the rows; rows from here keep no id
        for n in range(end + 1, counted[0] + 1):
            lines.append(n)
    return np.asarray(lines, np.int64), ids, swallowed


def _row_key(text: str, key_col: int, width: int) -> str | None:
    """The key_id of a CSV line that is a whole row by itself (`width` fields, an integer key_id, and its
    quotes paired: a line that goes on a quoted field of the line before, as RFC 4180 allows, closes it
    with an odd quote), else None."""
    if key_col < 0 or text.count('"') % 2:
        return None
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        return None
    key = fields[key_col].strip() if len(fields) == width else ""
    return key if re.fullmatch(r"-?\d+", key) else None


_KEY_RE = re.compile(r'"key_id"\s*:\s*"?(-?\d+)')


def _json_key_id(text: str) -> str:
    try:
        value = json.loads(text).get("key_id")
        return "" if value is None else str(value)
    except (ValueError, AttributeError, RecursionError):
        m = _KEY_RE.search(text)
        return m.group(1) if m else ""
