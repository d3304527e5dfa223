"""Why a row of a stroke file is rejected, how rejections are counted, and the format's limits.

Codes index `REASONS` (0 is "ok"); the numba scanners return them, `SkipStats` counts them by
name, and with ``on_bad="error"`` the first one becomes a `DataError` (`bad_input_message`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnlab.errors import DataError

REASONS: dict[str, str] = {
    "ok": "",
    "malformed_json": "the drawing or the JSON line is not valid JSON",
    "malformed_row": "the CSV row does not have the header's columns (or a quote is not closed)",
    "missing_field": "a required field is missing or empty (drawing, key_id and word)",
    "bad_value": "a field has the wrong type or form (key_id, recognized, timestamp, countrycode, y)",
    "length_mismatch": "a stroke's x, y (and t) lists differ in length",
    "empty_drawing": "the drawing has no strokes",
    "empty_stroke": "a stroke has no points",
    "non_finite": "a coordinate or time is NaN or infinite",
    "out_of_range": ("a coordinate is outside the format's range (simplified: integers 0..255; "
                     "raw: |x|, |y| <= 1e6 px, 0 <= t < 2**24 ms)"),
    "mixed_format": "simplified ([x, y]) and raw ([x, y, t]) strokes mixed in one drawing or file",
    "unknown_word": "the word is not in the class list",
    "label_mismatch": "the y column disagrees with the word for this class list",
    "duplicate_key_id": "the key_id was already read (the first drawing is kept)",
    "truncated_file": "the file ends in the middle of a row or of its compressed stream",
    "corrupt_file": "the compressed stream is corrupt; the rest of the file cannot be read",
    "line_too_long": "the line (one drawing) is over 16 MB; it was skipped unread",
    "invalid_utf8": "the word or another text field is not valid UTF-8",
    "in_open_quote": ("a CSV line that is a row by itself lies inside the previous row's unclosed quote "
                      "(predict gives it its own row; the scanners read the two lines as one malformed row)"),
}
_CODE = {name: i for i, name in enumerate(REASONS)}
_NAMES = list(REASONS)
R_OK = 0
R_MALFORMED_JSON = _CODE["malformed_json"]
R_MALFORMED_ROW = _CODE["malformed_row"]
R_MISSING = _CODE["missing_field"]
R_BAD_VALUE = _CODE["bad_value"]
R_LENGTH = _CODE["length_mismatch"]
R_EMPTY_DRAWING = _CODE["empty_drawing"]
R_EMPTY_STROKE = _CODE["empty_stroke"]
R_NON_FINITE = _CODE["non_finite"]
R_RANGE = _CODE["out_of_range"]
R_MIXED = _CODE["mixed_format"]

RAW_LIMIT = 1e6  # px: anything beyond is not a screen coordinate
TIME_LIMIT = float(2**24)  # ms (4.6 h): integer milliseconds stay exact in float32
MISSING_TIMESTAMP = np.iinfo(np.int64).min  # microseconds since the epoch, when absent


def raw_points_in_range(points: np.ndarray) -> bool:
    """Whether one stroke's finite (n, 2|3) points are within the raw format's limits, as the file readers
    check them (`scan_values._check_points`): |x|, |y| <= RAW_LIMIT and, with time, 0 <= t < TIME_LIMIT.
    The drawings of the Python API and the server are held to it, so a drawing one accepts the other does."""
    xy = np.abs(points[:, :2])
    if xy.size and xy.max() > RAW_LIMIT:
        return False
    return points.shape[1] < 3 or bool(((points[:, 2] >= 0) & (points[:, 2] < TIME_LIMIT)).all())



@dataclass
class SkipStats:
    """Rows skipped, by reason, with the first few places for a report."""

    counts: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)
    max_examples: int = 20

    def add(self, reason: str, path: Path | str, line: int, n: int = 1) -> None:
        self.counts[reason] += n
        if len(self.examples) < self.max_examples:
            self.examples.append({"file": str(path), "line": int(line), "reason": reason})

    def merge(self, other: SkipStats) -> None:
        self.counts.update(other.counts)
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[:max(room, 0)])

    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.counts.items())}


def bad_input_message(path: Path | str, line: int, reason: str, unit: str = "line") -> str:
    """The one-line error for --on-bad error: file, line (or record), reason and what it means."""
    return f"{path}: {unit} {line}: {reason}: {REASONS.get(reason, reason)}"


def check_on_bad(on_bad: str) -> None:
    """DataError unless on_bad is 'skip' or 'error'."""
    if on_bad not in ("skip", "error"):
        raise DataError(f"on_bad must be 'skip' or 'error', got {on_bad!r}")
