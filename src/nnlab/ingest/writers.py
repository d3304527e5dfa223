"""Writers: drawings out as Google ndjson, Kaggle CSV or Google .bin (gzip by a .gz name), and the
timestamp spellings they use."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.ingest.reasons import MISSING_TIMESTAMP
from nnlab.ingest.scan_values import _NO_INT, _parse_timestamp
from nnlab.strokes.drawing import Drawing


def format_timestamps(us: np.ndarray, style: str) -> list[str]:
    """Microseconds since the epoch -> strings: "google" ('2017-03-02 23:25:10.07453 UTC',
    trailing zeros of the fraction dropped) or "kaggle" ('2017-03-02 23:25:10.074530')."""
    us = np.asarray(us, np.int64)
    out = [""] * len(us)
    ok = us != MISSING_TIMESTAMP
    if not ok.any():
        return out
    text = np.datetime_as_string(us[ok].astype("datetime64[us]"), unit="us")
    vals = []
    for t in text.tolist():
        t = t.replace("T", " ")
        date, frac = t.split(".")
        if style == "google":
            frac = frac.rstrip("0")
            vals.append(f"{date}.{frac} UTC" if frac else f"{date} UTC")
        else:
            vals.append(t if frac != "000000" else date)
    for i, v in zip(np.flatnonzero(ok), vals):
        out[i] = v
    return out


def parse_timestamps(texts: Sequence[str]) -> np.ndarray:
    """Timestamp strings (Google's, Kaggle's or ISO) -> int64 microseconds since the epoch;
    "" gives MISSING_TIMESTAMP. DataError on any other malformed string."""
    out = np.full(len(texts), MISSING_TIMESTAMP, np.int64)
    for k, t in enumerate(texts):
        if t:
            b = np.frombuffer(t.encode("utf-8"), np.uint8)
            v = _parse_timestamp(b, 0, len(b))
            if v == _NO_INT:
                raise DataError(f"timestamp {t!r}: expected 'YYYY-MM-DD HH:MM:SS[.ffffff][ UTC]'")
            out[k] = v
    return out


def _num_list(a: np.ndarray, kaggle: bool) -> str:
    sep = ", " if kaggle else ","
    if a.dtype.kind in "iu":
        return "[" + sep.join(map(str, a.tolist())) + "]"
    vals = a.astype(np.float64).tolist()
    return "[" + sep.join(str(int(v)) if v == int(v) else repr(v) for v in vals) + "]"


def drawing_text(strokes: Sequence[np.ndarray], kaggle: bool = False) -> str:
    """Google's drawing JSON (compact) or Kaggle's CSV spelling (', ' separators)."""
    sep = ", " if kaggle else ","
    parts = []
    for s in strokes:
        s = np.asarray(s)
        cols = [s[:, k] for k in range(min(s.shape[1], 3))]
        parts.append("[" + sep.join(_num_list(c, kaggle) for c in cols) + "]")
    return "[" + sep.join(parts) + "]"


def ndjson_line(d: Drawing) -> str:
    """One Google ndjson line (keys in Google's order, key_id as a string)."""
    head = json.dumps({"word": d.word, "countrycode": d.countrycode, "timestamp": d.timestamp,
                       "recognized": bool(d.recognized), "key_id": str(d.key_id)},
                      separators=(",", ":"), ensure_ascii=False)
    return head[:-1] + ',"drawing":' + drawing_text(d.strokes) + "}"


KAGGLE_TRAIN_COLUMNS = ["countrycode", "drawing", "key_id", "recognized", "timestamp", "word"]
KAGGLE_TEST_COLUMNS = ["key_id", "countrycode", "drawing"]


def _kaggle_timestamp(google: str) -> str:
    if not google:
        return ""
    t = google[:-4] if google.endswith(" UTC") else google
    if "." in t:
        date, frac = t.split(".")
        return f"{date}.{frac.ljust(6, '0')}"
    return t


def csv_row(d: Drawing, test: bool = False) -> str:
    """One Kaggle CSV row: train_simplified columns, or test_simplified's when `test`."""
    drawing = '"' + drawing_text(d.strokes, kaggle=True) + '"'
    if test:
        return f"{d.key_id},{d.countrycode},{drawing}"
    word = d.word or ""
    if any(c in word for c in ',"\n'):
        word = '"' + word.replace('"', '""') + '"'
    return (f"{d.countrycode},{drawing},{d.key_id},{bool(d.recognized)},"
            f"{_kaggle_timestamp(d.timestamp)},{word}")


def _open_text_out(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "wb", compresslevel=6), encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def write_ndjson(drawings: Iterable[Drawing], path: str | os.PathLike) -> int:
    """Write drawings as Google ndjson (gzip when the name ends in .gz). Returns the count."""
    n = 0
    with _open_text_out(Path(path)) as f:
        for d in drawings:
            f.write(ndjson_line(d) + "\n")
            n += 1
    return n


def write_csv(drawings: Iterable[Drawing], path: str | os.PathLike, test: bool = False) -> int:
    """Write drawings as a Kaggle CSV (test_simplified columns when `test`). Returns the count."""
    n = 0
    with _open_text_out(Path(path)) as f:
        f.write(",".join(KAGGLE_TEST_COLUMNS if test else KAGGLE_TRAIN_COLUMNS) + "\n")
        for d in drawings:
            if not test and d.word is None:
                raise DataError(f"drawing key_id={d.key_id} has no word: write unlabelled drawings in "
                                "the test format (key_id, countrycode, drawing)")
            f.write(csv_row(d, test) + "\n")
            n += 1
    return n


def write_bin(drawings: Iterable[Drawing], path: str | os.PathLike) -> int:
    """Write simplified drawings in Google's .bin layout (the word is the file name's business)."""
    n = 0
    with open(path, "wb") as f:
        for d in drawings:
            ts = int(parse_timestamps([d.timestamp])[0]) // 1_000_000 if d.timestamp else 0  # whole seconds
            cc = d.countrycode.encode("ascii")[:2].ljust(2, b"\0")
            f.write(struct.pack("<Q2sBIH", d.key_id, cc, int(bool(d.recognized)), ts, len(d.strokes)))
            for s in d.strokes:
                s = np.asarray(s)
                if len(s) and (s[:, :2].min() < 0 or s[:, :2].max() > 255):
                    raise DataError(f"drawing key_id={d.key_id}: .bin holds simplified coordinates "
                                    "0..255 only")
                f.write(struct.pack("<H", len(s)))
                f.write(s[:, 0].astype(np.uint8).tobytes() + s[:, 1].astype(np.uint8).tobytes())
            n += 1
    return n
