"""Quick, Draw! stroke data: streaming readers, writers and the class vocabulary.

Formats read (gzip is detected from the file's magic bytes, whatever its name):

- Google simplified ndjson: ``{"word", "countrycode", "timestamp", "recognized", "key_id",
  "drawing": [[[x...], [y...]], ...]}`` with integer coordinates in 0..255;
- Google raw ndjson: the same with ``[[x...], [y...], [t...]]`` strokes, float screen coordinates
  and t in milliseconds since the first point;
- Kaggle CSVs: ``train_simplified/<word>.csv`` / ``train_raw`` (countrycode, drawing, key_id,
  recognized, timestamp, word), re-shuffled shards such as ``train_k0.csv.gz`` (the same plus a
  ``y`` column) and ``test_simplified.csv`` (key_id, countrycode, drawing: unlabelled);
- Google's binary ``.bin`` files (key_id u64, countrycode 2 chars, recognized u8, timestamp u32,
  n_strokes u16, then per stroke n_points u16, x u8[n], y u8[n]; the word is the file name).

Required fields: drawing, key_id, and the word wherever the format has one (a null word in
ndjson is an unlabelled drawing); countrycode, recognized and timestamp default to "", true and
absent.

Text formats are parsed a chunk at a time by numba-compiled scanners (one pass over the bytes, no
per-row ``json.loads``), into packed arrays (`ParsedChunk`). `read_drawings` turns those into
`Drawing` objects for code that wants one drawing at a time.

Bad rows are never shifted or repaired: each is skipped and counted under one reason
(`REASONS`), or, with ``on_bad="error"``, the first one raises `DataError` naming the file, the
line (the record for ``.bin``) and the reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numba
import numpy as np

from nnlab.data.drawing import Drawing
from nnlab.data.simplify import simplify_packed
from nnlab.errors import DataError

# --------------------------------------------------------------------------------------------
# Reasons a row is rejected. Codes index REASONS; 0 is "ok".
# --------------------------------------------------------------------------------------------

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

# --------------------------------------------------------------------------------------------
# Class vocabulary: Quick, Draw! words have spaces, Kaggle labels underscores.
# --------------------------------------------------------------------------------------------


def word_to_label(word: str) -> str:
    """The Kaggle label of a word ("The Eiffel Tower" -> "The_Eiffel_Tower")."""
    return word.replace(" ", "_")


def label_to_word(label: str) -> str:
    """The Quick, Draw! word of a Kaggle label (no word contains an underscore)."""
    return label.replace("_", " ")


def sort_words(words: Iterable[str]) -> list[str]:
    """Distinct words in the Kaggle notebooks' order: case-insensitive sort (ties by case)."""
    return sorted({label_to_word(w) for w in words}, key=lambda w: (w.lower(), w))


class Vocabulary:
    """The one mapping between class indices, words (with spaces) and Kaggle labels."""

    def __init__(self, words: Sequence[str]):
        self.words = [label_to_word(w) for w in words]
        if len(set(self.words)) != len(self.words):
            dup = sorted(w for w, n in Counter(self.words).items() if n > 1)
            raise DataError(f"class list repeats {dup[:5]}")
        self._index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocabulary:
        """Vocabulary of these words in Kaggle order (case-insensitive sort)."""
        return cls(sort_words(words))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a classes.txt (one word or Kaggle label per line, in class order)."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataError(f"cannot read class list {path}: {exc.strerror}") from exc
        return cls([line.strip() for line in lines if line.strip()])

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text("".join(w + "\n" for w in self.words), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return label_to_word(word) in self._index

    def index(self, word: str) -> int:
        """Class index of a word or Kaggle label; -1 when unknown."""
        return self._index.get(label_to_word(word), -1)

    @property
    def labels(self) -> list[str]:
        """Kaggle labels (underscores), in class order."""
        return [word_to_label(w) for w in self.words]


# --------------------------------------------------------------------------------------------
# numba scanners
# --------------------------------------------------------------------------------------------

_POW10 = np.array([10.0**k for k in range(23)])
_NO_INT = np.iinfo(np.int64).min

_Q, _COMMA, _LBR, _RBR, _LBRACE, _RBRACE, _COLON, _BSL = 34, 44, 91, 93, 123, 125, 58, 92


@numba.njit(cache=True, inline="always")
def _ws(buf, i, end):
    while i < end and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
        i += 1
    return i


@numba.njit(cache=True)
def _parse_number(buf, i, end):
    """A JSON-like number at buf[i]: (value, next index, 0 ok / 1 syntax / 2 not finite)."""
    neg = False
    if i < end and (buf[i] == 45 or buf[i] == 43):  # - +
        neg = buf[i] == 45
        i += 1
    if i < end and (buf[i] == 78 or buf[i] == 110 or buf[i] == 73 or buf[i] == 105):  # NaN, Infinity
        j = i
        while j < end and ((65 <= buf[j] <= 90) or (97 <= buf[j] <= 122)):
            j += 1
        return 0.0, j, 2
    mant = 0
    exp10 = 0
    ndig = 0
    while i < end and 48 <= buf[i] <= 57:
        if mant < 100000000000000000:
            mant = mant * 10 + (buf[i] - 48)
        else:
            exp10 += 1
        ndig += 1
        i += 1
    if i < end and buf[i] == 46:  # .
        i += 1
        nfrac = 0
        while i < end and 48 <= buf[i] <= 57:
            if mant < 100000000000000000:
                mant = mant * 10 + (buf[i] - 48)
                exp10 -= 1
            nfrac += 1
            i += 1
        if nfrac == 0:
            return 0.0, i, 1
        ndig += nfrac
    if ndig == 0:
        return 0.0, i, 1
    if i < end and (buf[i] == 101 or buf[i] == 69):  # e E
        i += 1
        eneg = False
        if i < end and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        e = 0
        nd = 0
        while i < end and 48 <= buf[i] <= 57:
            if e < 100000:
                e = e * 10 + (buf[i] - 48)
            nd += 1
            i += 1
        if nd == 0:
            return 0.0, i, 1
        exp10 += -e if eneg else e
    v = float(mant)
    if mant != 0:
        if exp10 > 308:
            return 0.0, i, 2
        if exp10 > 0:
            while exp10 > 22:
                v *= 1e22
                exp10 -= 22
            v *= _POW10[exp10]
        elif exp10 < 0:
            k = -exp10
            while k > 22 and v != 0.0:
                v /= 1e22
                k -= 22
            if mant <= 9007199254740992 or k < -exp10:
                v /= _POW10[k]  # exact operands: the quotient is correctly rounded
            else:
                v = _div_exact(mant, _POW10[k])
    if v == np.inf:
        return 0.0, i, 2
    return (-v if neg else v), i, 0


@numba.njit(cache=True, inline="always")
def _split(a):
    c = 134217729.0 * a  # Veltkamp split: a == hi + lo with 26-bit halves
    hi = c - (c - a)
    return hi, a - hi


@numba.njit(cache=True)
def _div_exact(mant, p):
    """mant / p for an integer mant above 2**53 and an exact power of ten p, rounded once.

    float(mant) alone rounds first; raw coordinates printed with 17 digits can sit exactly
    half-way between two float32 values, where that first rounding flips the float32 result."""
    hi = float(mant)
    lo = float(mant - np.int64(hi))
    q = hi / p
    # exact q * p as prod + err (Dekker's product)
    prod = q * p
    qh, ql = _split(q)
    ph, pl = _split(p)
    err = ((qh * ph - prod) + qh * pl + ql * ph) + ql * pl
    r = (hi - prod) - err + lo
    return q + r / p


@numba.njit(cache=True)
def _parse_int(buf, s, e):
    """An integer in buf[s:e] (optional quotes stripped by the caller): value or _NO_INT."""
    neg = False
    if s < e and buf[s] == 45:
        neg = True
        s += 1
    if s >= e or e - s > 19:
        return _NO_INT
    v = 0
    for k in range(s, e):
        c = buf[k]
        if c < 48 or c > 57:
            return _NO_INT
        if v > 922337203685477580:  # next step would overflow int64
            return _NO_INT
        v = v * 10 + (c - 48)
        if v < 0:
            return _NO_INT
    return -v if neg else v


@numba.njit(cache=True)
def _digits(buf, s, n):
    v = 0
    for k in range(s, s + n):
        c = buf[k]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@numba.njit(cache=True)
def _parse_timestamp(buf, s, e):
    """'YYYY-MM-DD HH:MM:SS[.f{1,6}][ UTC]' (or 'T' / 'Z') -> microseconds since the epoch, or
    _NO_INT when malformed. An empty span is MISSING_TIMESTAMP, which equals _NO_INT, so the
    caller tells them apart by the span length."""
    if e - s < 19 or buf[s + 4] != 45 or buf[s + 7] != 45 or buf[s + 13] != 58 or buf[s + 16] != 58:
        return _NO_INT
    if buf[s + 10] != 32 and buf[s + 10] != 84:
        return _NO_INT
    y = _digits(buf, s, 4)
    mo = _digits(buf, s + 5, 2)
    d = _digits(buf, s + 8, 2)
    hh = _digits(buf, s + 11, 2)
    mi = _digits(buf, s + 14, 2)
    ss = _digits(buf, s + 17, 2)
    if y < 0 or mo < 1 or mo > 12 or d < 1 or d > 31 or hh < 0 or hh > 23 or mi < 0 or mi > 59 \
            or ss < 0 or ss > 60:
        return _NO_INT
    i = s + 19
    us = 0
    if i < e and buf[i] == 46:
        i += 1
        nd = 0
        while i < e and 48 <= buf[i] <= 57:
            if nd == 6:
                return _NO_INT  # finer than microseconds: refuse rather than truncate
            us = us * 10 + (buf[i] - 48)
            nd += 1
            i += 1
        if nd == 0:
            return _NO_INT
        for _ in range(6 - nd):
            us *= 10
    if i < e and buf[i] == 90:  # Z
        i += 1
    elif e - i == 4 and buf[i] == 32 and buf[i + 1] == 85 and buf[i + 2] == 84 and buf[i + 3] == 67:
        i += 4  # " UTC"
    if i != e:
        return _NO_INT
    # days from the civil date (H. Hinnant's algorithm)
    yy = y - 1 if mo <= 2 else y
    era = yy // 400
    yoe = yy - era * 400
    mp = mo - 3 if mo > 2 else mo + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return ((days * 24 + hh) * 60 + mi) * 60 * 1000000 + ss * 1000000 + us


@numba.njit(cache=True)
def _skip_value(buf, i, end):
    """Skip one JSON value at buf[i] (string, literal, number, nested array/object): next index or -1."""
    if i >= end:
        return -1
    c = buf[i]
    if c == _Q:
        i += 1
        while i < end:
            if buf[i] == _BSL:
                i += 2
                continue
            if buf[i] == _Q:
                return i + 1
            i += 1
        return -1
    if c == _LBR or c == _LBRACE:
        depth = 0
        while i < end:
            c = buf[i]
            if c == _Q:
                i = _skip_value(buf, i, end)
                if i < 0:
                    return -1
                continue
            if c == _LBR or c == _LBRACE:
                depth += 1
            elif c == _RBR or c == _RBRACE:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    j = i
    while j < end and (buf[j] == 45 or buf[j] == 43 or buf[j] == 46 or 48 <= buf[j] <= 57
                       or 65 <= buf[j] <= 90 or 97 <= buf[j] <= 122):
        j += 1
    return j if j > i else -1


@numba.njit(cache=True, inline="always")
def _separator(buf, i, end):
    """After a list item: (index after ',' and blanks, 0), (index after ']', 1) or (i, -1)."""
    i = _ws(buf, i, end)
    if i < end and buf[i] == _COMMA:
        return _ws(buf, i + 1, end), 0
    if i < end and buf[i] == _RBR:
        return i + 1, 1
    return i, -1


@numba.njit(cache=True)
def _parse_drawing(buf, i, end, px, py, pt, p0, slen, s0):
    """Parse ``[[[x...],[y...](,[t...])], ...]`` at buf[i] into px/py/pt from p0 and slen from s0.

    Returns (next index, points, strokes, arrays per stroke, all numbers plain integers <= 255,
    status). Errors return at once; the caller skips the rest of the value when it needs to."""
    i = _ws(buf, i, end)
    if i >= end or buf[i] != _LBR:
        return i, 0, 0, 0, False, R_MALFORMED_JSON
    i = _ws(buf, i + 1, end)
    if i < end and buf[i] == _RBR:
        return i + 1, 0, 0, 0, False, R_EMPTY_DRAWING
    npts = 0
    nstr = 0
    narr_d = 0
    plain = True  # every number a plain integer <= 255: no range pass needed for simplified data
    cap_p = len(px)
    cap_s = len(slen)
    while True:
        if i >= end or buf[i] != _LBR:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        i = _ws(buf, i + 1, end)
        if i < end and buf[i] == _RBR:
            return i, 0, 0, 0, False, R_EMPTY_STROKE
        a = 0
        n_first = 0
        base = p0 + npts
        while True:
            if i >= end or buf[i] != _LBR:
                return i, 0, 0, 0, False, R_MALFORMED_JSON
            i = _ws(buf, i + 1, end)
            if a == 0:
                tgt = px
                lim = cap_p - base
            elif a == 1:
                tgt = py
                lim = n_first
            else:
                tgt = pt
                lim = n_first if a == 2 else 0
            cnt = 0
            if i < end and buf[i] == _RBR:
                i += 1
            else:
                while True:
                    # fast path: a plain integer (every simplified coordinate, most raw times)
                    start = i
                    iv = 0
                    c = 0
                    while i < end:
                        c = buf[i]
                        if c < 48 or c > 57:
                            break
                        iv = iv * 10 + (c - 48)
                        i += 1
                    if i == end:
                        c = 0
                    if i > start and i - start <= 15 and c != 46 and c != 101 and c != 69:
                        v = float(iv)
                        if iv > 255:
                            plain = False
                    else:
                        plain = False
                        v, i, st = _parse_number(buf, start, end)
                        if st == 1:
                            return i, 0, 0, 0, False, R_MALFORMED_JSON
                        if st == 2:
                            return i, 0, 0, 0, False, R_NON_FINITE
                        c = buf[i] if i < end else 0
                    if cnt < lim:
                        tgt[base + cnt] = v
                    cnt += 1
                    if c == _COMMA:
                        i += 1
                        while i < end and buf[i] == 32:
                            i += 1
                        continue
                    if c == _RBR:
                        i += 1
                        break
                    i, sep = _separator(buf, i, end)
                    if sep == 0:
                        continue
                    if sep < 0:
                        return i, 0, 0, 0, False, R_MALFORMED_JSON
                    break
            if a == 0:
                n_first = cnt
                if cnt > lim:  # cannot happen with the caller's capacity bound; be safe
                    return i, 0, 0, 0, False, R_MALFORMED_JSON
            elif cnt != n_first:
                return i, 0, 0, 0, False, R_LENGTH
            a += 1
            i, sep = _separator(buf, i, end)
            if sep == 0:
                continue
            if sep < 0:
                return i, 0, 0, 0, False, R_MALFORMED_JSON
            break
        if a < 2 or a > 3:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        if narr_d == 0:
            narr_d = a
        elif a != narr_d:
            return i, 0, 0, 0, False, R_MIXED
        if n_first == 0:
            return i, 0, 0, 0, False, R_EMPTY_STROKE
        if s0 + nstr >= cap_s:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        slen[s0 + nstr] = n_first
        nstr += 1
        npts += n_first
        i, sep = _separator(buf, i, end)
        if sep == 0:
            continue
        if sep < 0:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        return i, npts, nstr, narr_d, plain, R_OK


@numba.njit(cache=True)
def _check_points(px, py, pt, p0, n, narr):
    """Range check of one drawing's points: simplified integers 0..255, raw |xy| and t limits."""
    if narr == 2:
        for k in range(p0, p0 + n):
            x = px[k]
            y = py[k]
            if x < 0.0 or x > 255.0 or y < 0.0 or y > 255.0 or x != np.floor(x) or y != np.floor(y):
                return R_RANGE
    else:
        for k in range(p0, p0 + n):
            if abs(px[k]) > RAW_LIMIT or abs(py[k]) > RAW_LIMIT or pt[k] < 0.0 or pt[k] >= TIME_LIMIT:
                return R_RANGE
    return R_OK


@numba.njit(cache=True)
def _newlines(buf, n):
    """(newlines in buf[:n], index just after the last one, 0 if none)."""
    count = 0
    for k in range(n):
        count += buf[k] == 10  # branch-free, so that it vectorises
    last = n
    while last > 0 and buf[last - 1] != 10:
        last -= 1
    return count, last


@numba.njit(cache=True)
def _interleave(px, py, out):
    """(x, y) columns -> (P, 2) rows of out's dtype (simplified values are checked integers 0..255)."""
    for k in range(len(px)):
        out[k, 0] = px[k]
        out[k, 1] = py[k]
    return out


@numba.njit(cache=True)
def _word_changes(buf, ws, wl, esc):
    """True where a row's word differs from the previous row's (or either is escaped)."""
    n = len(ws)
    out = np.ones(n, np.bool_)
    for r in range(1, n):
        if wl[r] != wl[r - 1] or esc[r] or esc[r - 1]:
            continue
        same = True
        a = ws[r]
        b = ws[r - 1]
        for k in range(wl[r]):
            if buf[a + k] != buf[b + k]:
                same = False
                break
        out[r] = not same
    return out


# Row fields, in the order of the `rows` int64 matrix the scanners fill (one row per kept drawing).
F_LINE, F_NPTS, F_NSTR, F_KEY, F_REC, F_TS, F_Y, F_WS, F_WL, F_CS, F_CL, F_FLAGS = range(12)
N_FIELDS = 12
FLAG_WORD_ESC, FLAG_COUNTRY_ESC = 1, 2

# CSV column roles
ROLE_IGNORE, ROLE_COUNTRY, ROLE_DRAWING, ROLE_KEY, ROLE_REC, ROLE_TS, ROLE_WORD, ROLE_Y = range(8)
_CSV_ROLES = {"countrycode": ROLE_COUNTRY, "drawing": ROLE_DRAWING, "key_id": ROLE_KEY,
              "recognized": ROLE_REC, "timestamp": ROLE_TS, "word": ROLE_WORD, "y": ROLE_Y}


@numba.njit(cache=True)
def _bool_literal(buf, s, e):
    """true/True/1 -> 1, false/False/0 -> 0, otherwise -1."""
    n = e - s
    if n == 1:
        return 1 if buf[s] == 49 else (0 if buf[s] == 48 else -1)
    if n == 4 and (buf[s] == 116 or buf[s] == 84) and buf[s + 1] == 114 and buf[s + 2] == 117 \
            and buf[s + 3] == 101:
        return 1
    if n == 5 and (buf[s] == 102 or buf[s] == 70) and buf[s + 1] == 97 and buf[s + 2] == 108 \
            and buf[s + 3] == 115 and buf[s + 4] == 101:
        return 0
    return -1


@numba.njit(cache=True)
def _new_row(rows, R):
    """Defaults of a row's fields: no key_id, recognized, no timestamp, no y, no word, no country."""
    rows[R, F_KEY] = _NO_INT
    rows[R, F_REC] = 1
    rows[R, F_TS] = _NO_INT
    rows[R, F_Y] = -1
    rows[R, F_WS] = 0
    rows[R, F_WL] = -1
    rows[R, F_CS] = 0
    rows[R, F_CL] = 0
    rows[R, F_FLAGS] = 0


@numba.njit(cache=True)
def _finish_row(status, narr, plain, expect, px, py, pt, P, S, npts, nstr, rows, R, bad, B, line):
    """Shared end of a row: format and range checks, then the row kept or counted as bad.
    Returns the new (rows, bad rows, points, strokes, expect)."""
    if status == R_OK:
        if expect != 0 and narr != expect:
            status = R_MIXED
        elif not (plain and narr == 2):
            status = _check_points(px, py, pt, P, npts, narr)
    if status != R_OK:
        bad[B, 0] = line
        bad[B, 1] = status
        return R, B + 1, P, S, expect
    rows[R, F_LINE] = line
    rows[R, F_NPTS] = npts
    rows[R, F_NSTR] = nstr
    return R + 1, B, P + npts, S + nstr, narr if expect == 0 else expect


@numba.njit(cache=True)
def _scan_csv(buf, roles, expect, line0, px, py, pt, slen, rows, bad):
    """Parse the CSV rows of buf (whole lines), in one pass over the bytes.

    Returns (rows kept, bad rows, points, strokes, expect)."""
    n = len(buf)
    ncols = len(roles)
    R = B = P = S = 0  # rows kept, bad rows, points, strokes
    line = line0 - 1
    s = 0
    while s < n:
        line += 1
        i = _ws(buf, s, n)
        if i >= n or buf[i] == 10:  # blank line
            s = i + 1
            continue
        i = s
        status = R_OK
        npts = 0
        nstr = 0
        narr = 0
        plain = False
        drawn = False
        _new_row(rows, R)
        for c in range(ncols):
            role = roles[c]
            dq = False
            if i < n and buf[i] == _Q:
                found = False
                if role == ROLE_DRAWING and status == R_OK:
                    # parse the drawing straight from the bytes; its closing quote must follow
                    j, npts, nstr, narr, plain, st = _parse_drawing(buf, i + 1, n, px, py, pt, P, slen, S)
                    if st == R_OK:
                        j = _ws(buf, j, n)
                        if j < n and buf[j] == _Q:
                            fs = i + 1
                            fe = j
                            i = j + 1
                            found = True
                            drawn = True
                if not found:
                    j = i + 1
                    closed = False
                    while j < n and buf[j] != 10:
                        if buf[j] == _Q:
                            if j + 1 < n and buf[j + 1] == _Q:
                                dq = True
                                j += 2
                                continue
                            closed = True
                            break
                        j += 1
                    if not closed:
                        status = R_MALFORMED_ROW
                        i = j
                        break
                    fs = i + 1
                    fe = j
                    i = j + 1
            else:
                j = i
                while j < n and buf[j] != _COMMA and buf[j] != 10:
                    j += 1
                fs = i
                fe = j
                i = j
                if c == ncols - 1:
                    while fe > fs and buf[fe - 1] == 13:
                        fe -= 1
            if c < ncols - 1:
                if i >= n or buf[i] != _COMMA:
                    status = R_MALFORMED_ROW
                    break
                i += 1
            else:
                k = i
                while k < n and buf[k] == 13:
                    k += 1
                if k < n and buf[k] != 10:
                    status = R_MALFORMED_ROW
                    break
                i = k
            if status != R_OK:
                continue  # keep splitting: a malformed row wins over a semantic error
            if role == ROLE_DRAWING:
                if drawn:
                    continue
                if _ws(buf, fs, fe) == fe:
                    status = R_MISSING
                    continue
                j, npts, nstr, narr, plain, st = _parse_drawing(buf, fs, fe, px, py, pt, P, slen, S)
                if st == R_OK and _ws(buf, j, fe) != fe:
                    st = R_MALFORMED_JSON
                status = st
            elif role == ROLE_KEY:
                if fs == fe:
                    status = R_MISSING
                else:
                    v = _parse_int(buf, fs, fe)
                    if v == _NO_INT or v < 0:
                        status = R_BAD_VALUE
                    rows[R, F_KEY] = v
            elif role == ROLE_REC:
                if fs < fe:
                    b = _bool_literal(buf, fs, fe)
                    if b < 0:
                        status = R_BAD_VALUE
                    rows[R, F_REC] = b
            elif role == ROLE_TS:
                if fs < fe:
                    v = _parse_timestamp(buf, fs, fe)
                    if v == _NO_INT:
                        status = R_BAD_VALUE
                    rows[R, F_TS] = v
            elif role == ROLE_WORD:
                if fs == fe:
                    status = R_MISSING
                rows[R, F_WS] = fs
                rows[R, F_WL] = fe - fs
                if dq:
                    rows[R, F_FLAGS] |= FLAG_WORD_ESC
            elif role == ROLE_COUNTRY:
                if fe - fs > 2:
                    status = R_BAD_VALUE
                rows[R, F_CS] = fs
                rows[R, F_CL] = fe - fs
            elif role == ROLE_Y:
                if fs < fe:
                    v = _parse_int(buf, fs, fe)
                    if v == _NO_INT or v < 0:
                        status = R_BAD_VALUE
                    rows[R, F_Y] = v
        while i < n and buf[i] != 10:  # the rest of a malformed row
            i += 1
        s = i + 1
        R, B, P, S, expect = _finish_row(status, narr, plain, expect, px, py, pt, P, S, npts, nstr,
                                         rows, R, bad, B, line)
    return R, B, P, S, expect


# ndjson keys (bytes) the scanner knows
_K_WORD, _K_COUNTRY, _K_TS, _K_REC, _K_KEY, _K_DRAWING = range(1, 7)
_KEYS = np.frombuffer(b"word\0countrycode\0timestamp\0recognized\0key_id\0drawing\0", dtype=np.uint8)


@numba.njit(cache=True)
def _key_id(buf, s, e):
    """Which known key buf[s:e] is (1..6), 0 for any other."""
    k = 1
    start = 0
    for j in range(len(_KEYS)):
        if _KEYS[j] == 0:
            if j - start == e - s:
                same = True
                for t in range(e - s):
                    if buf[s + t] != _KEYS[start + t]:
                        same = False
                        break
                if same:
                    return k
            k += 1
            start = j + 1
    return 0


@numba.njit(cache=True)
def _scan_string(buf, i, end):
    """A JSON string at buf[i] == '"': (content start, content end, next index, has escape) or -1."""
    j = i + 1
    esc = False
    while j < end:
        c = buf[j]
        if c == _BSL:
            esc = True
            j += 2
            continue
        if c == _Q:
            return i + 1, j, j + 1, esc
        if c < 32:
            return -1, -1, -1, esc
        j += 1
    return -1, -1, -1, esc


@numba.njit(cache=True)
def _scan_ndjson(buf, expect, line0, px, py, pt, slen, rows, bad):
    """Parse the ndjson lines of buf. Returns (rows kept, bad rows, points, strokes, expect)."""
    n = len(buf)
    R = B = P = S = 0  # rows kept, bad rows, points, strokes
    line = line0 - 1
    s = 0
    while s < n:
        e = s
        while e < n and buf[e] != 10:
            e += 1
        nxt = e + 1
        line += 1
        i = _ws(buf, s, e)
        if i == e:
            s = nxt
            continue
        syntax = False
        status = R_OK
        npts = 0
        nstr = 0
        narr = 0
        plain = False
        seen = 0
        _new_row(rows, R)
        if buf[i] != _LBRACE:
            syntax = True
        else:
            i = _ws(buf, i + 1, e)
            if i < e and buf[i] == _RBRACE:
                i += 1
            else:
                while True:
                    if i >= e or buf[i] != _Q:
                        syntax = True
                        break
                    ks, ke, i, kesc = _scan_string(buf, i, e)
                    if ks < 0:
                        syntax = True
                        break
                    key = 0 if kesc else _key_id(buf, ks, ke)
                    i = _ws(buf, i, e)
                    if i >= e or buf[i] != _COLON:
                        syntax = True
                        break
                    i = _ws(buf, i + 1, e)
                    if i >= e:
                        syntax = True
                        break
                    c = buf[i]
                    if key == _K_DRAWING and c == _LBR:
                        j, npts, nstr, narr, plain, st = _parse_drawing(buf, i, e, px, py, pt, P, slen, S)
                        if st == R_MALFORMED_JSON:
                            syntax = True
                            break
                        if st != R_OK:
                            j = _skip_value(buf, i, e)
                            if j < 0:
                                syntax = True
                                break
                            if status == R_OK:
                                status = st
                        i = j
                        seen |= 1 << key
                    elif c == _Q:
                        vs, ve, j, vesc = _scan_string(buf, i, e)
                        if vs < 0:
                            syntax = True
                            break
                        i = j
                        if key != 0:
                            seen |= 1 << key
                        if key == _K_WORD:
                            rows[R, F_WS] = vs
                            rows[R, F_WL] = ve - vs
                            if vesc:
                                rows[R, F_FLAGS] |= FLAG_WORD_ESC
                        elif key == _K_COUNTRY:
                            rows[R, F_CS] = vs
                            rows[R, F_CL] = ve - vs
                            if vesc:
                                rows[R, F_FLAGS] |= FLAG_COUNTRY_ESC
                            elif ve - vs > 2 and status == R_OK:
                                status = R_BAD_VALUE
                        elif key == _K_TS:
                            if ve > vs:
                                v = _parse_timestamp(buf, vs, ve)
                                if v == _NO_INT and status == R_OK:
                                    status = R_BAD_VALUE
                                rows[R, F_TS] = v
                        elif key == _K_KEY:
                            v = _parse_int(buf, vs, ve)
                            if (v == _NO_INT or v < 0) and status == R_OK:
                                status = R_BAD_VALUE
                            rows[R, F_KEY] = v
                        elif key != 0 and status == R_OK:  # recognized or drawing as a string
                            status = R_BAD_VALUE
                    else:
                        j = _skip_value(buf, i, e)
                        if j < 0:
                            syntax = True
                            break
                        if key != 0:
                            seen |= 1 << key
                        lit = -1
                        isnull = j - i == 4 and c == 110 and buf[i + 1] == 117 and buf[i + 2] == 108 \
                            and buf[i + 3] == 108
                        if c == 116 or c == 102:
                            lit = _bool_literal(buf, i, j)
                            if lit < 0:
                                syntax = True
                                break
                        if key == _K_KEY and (c == 45 or 48 <= c <= 57):
                            v = _parse_int(buf, i, j)
                            if (v == _NO_INT or v < 0) and status == R_OK:
                                status = R_BAD_VALUE
                            rows[R, F_KEY] = v
                        elif key == _K_REC and lit >= 0:
                            rows[R, F_REC] = lit
                        elif key == _K_WORD and isnull:
                            rows[R, F_WL] = -1  # null word: an unlabelled drawing
                        elif key == _K_TS and isnull:
                            pass
                        elif key == _K_KEY or key == _K_DRAWING:
                            if isnull:
                                seen &= ~(1 << key)  # null key_id / drawing: missing
                            elif status == R_OK:
                                status = R_BAD_VALUE
                        elif key != 0 and status == R_OK:
                            status = R_BAD_VALUE
                        i = j
                    i = _ws(buf, i, e)
                    if i < e and buf[i] == _COMMA:
                        i = _ws(buf, i + 1, e)
                        continue
                    if i < e and buf[i] == _RBRACE:
                        i += 1
                        break
                    syntax = True
                    break
            if not syntax and _ws(buf, i, e) != e:
                syntax = True
        if syntax:
            status = R_MALFORMED_JSON
        elif status == R_OK:
            need = (1 << _K_WORD) | (1 << _K_KEY) | (1 << _K_DRAWING)
            if seen & need != need:
                status = R_MISSING
        R, B, P, S, expect = _finish_row(status, narr, plain, expect, px, py, pt, P, S, npts, nstr,
                                         rows, R, bad, B, line)
        s = nxt
    return R, B, P, S, expect


@numba.njit(cache=True)
def _scan_bin(buf, rec0, px, py, slen, rows, bad):
    """Parse whole Google .bin records from buf: (rows, bad, points, strokes, bytes used, records)."""
    n = len(buf)
    R = 0
    B = 0
    P = 0
    S = 0
    i = 0
    rec = rec0
    while True:
        if i + 17 > n:
            break
        key = 0
        for k in range(8):
            key |= np.int64(buf[i + k]) << (8 * k)
        # a key_id >= 2**63 shows up negative: it cannot be stored as int64
        ts = np.int64(buf[i + 11]) | (np.int64(buf[i + 12]) << 8) | (np.int64(buf[i + 13]) << 16) \
            | (np.int64(buf[i + 14]) << 24)
        ns = np.int64(buf[i + 15]) | (np.int64(buf[i + 16]) << 8)
        j = i + 17
        complete = True
        status = R_OK
        npts = 0
        for k in range(ns):
            if j + 2 > n:
                complete = False
                break
            m = np.int64(buf[j]) | (np.int64(buf[j + 1]) << 8)
            if j + 2 + 2 * m > n:
                complete = False
                break
            if m == 0 and status == R_OK:
                status = R_EMPTY_STROKE
            if status == R_OK:
                for t in range(m):
                    px[P + npts + t] = buf[j + 2 + t]
                    py[P + npts + t] = buf[j + 2 + m + t]
                slen[S + k] = m
                npts += m
            j += 2 + 2 * m
        if not complete:
            break
        rec += 1
        if ns == 0:
            status = R_EMPTY_DRAWING
        elif key < 0 or buf[i + 10] > 1:
            status = R_BAD_VALUE
        if status != R_OK:
            bad[B, 0] = rec
            bad[B, 1] = status
            B += 1
        else:
            rows[R, F_LINE] = rec
            rows[R, F_NPTS] = npts
            rows[R, F_NSTR] = ns
            rows[R, F_KEY] = key
            rows[R, F_REC] = buf[i + 10]
            rows[R, F_TS] = ts * 1000000
            rows[R, F_Y] = -1
            rows[R, F_WS] = 0
            rows[R, F_WL] = -1
            rows[R, F_CS] = i + 8
            rows[R, F_CL] = 2
            rows[R, F_FLAGS] = 0
            R += 1
            P += npts
            S += ns
        i = j
    return R, B, P, S, i, rec


# --------------------------------------------------------------------------------------------
# Byte sources: plain or gzip, whole lines at a time, truncation detected
# --------------------------------------------------------------------------------------------

CHUNK_BYTES = 8 << 20


class _ByteSource:
    """Reads a file (plain or gzip, by magic bytes) in blocks of about `chunk_bytes`.

    `blocks()` yields the bytes as they come, `text_blocks()` whole lines. After the iteration,
    `trouble` is None or (reason, where): "truncated_file" or "corrupt_file", and for text the
    line of the row cut off."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES):
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.trouble: tuple[str, object] | None = None
        try:
            with open(path, "rb") as f:
                self.gzip = f.read(2) == b"\x1f\x8b"
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from exc

    def text_blocks(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """Whole lines: (uint8 block, lines before it, newlines in it). A block is a view of a
        buffer reused for the next one: use it before asking for the next."""
        buf = np.empty(self.chunk_bytes + 16, np.uint8)
        fill = 0
        lines_before = 0
        for raw in self.blocks():
            piece = np.frombuffer(raw, np.uint8)
            off = 0
            while off < len(piece):
                k = min(len(buf) - fill, len(piece) - off)
                buf[fill:fill + k] = piece[off:off + k]
                fill += k
                off += k
                if fill < len(buf):
                    continue
                nl, cut = _newlines(buf, fill)
                if cut == 0:  # one line longer than the buffer: grow it
                    buf = np.concatenate([buf, np.empty_like(buf)])
                    continue
                yield buf[:cut], lines_before, nl
                lines_before += nl
                buf[:fill - cut] = buf[cut:fill]
                fill -= cut
        nl, cut = _newlines(buf, fill)
        if self.trouble is not None:
            # The row cut off by the end of the stream is counted as the trouble, never parsed.
            if cut:
                yield buf[:cut], lines_before, nl
            self.trouble = (self.trouble[0], lines_before + nl + 1)
            return
        if fill:
            yield buf[:fill], lines_before, nl

    def blocks(self) -> Iterator[bytes]:
        """Decompressed blocks; marks a gzip stream that ends before its end-of-stream marker."""
        with open(self.path, "rb") as f:
            if not self.gzip:
                while block := f.read(self.chunk_bytes):
                    yield block
                return
            d = zlib.decompressobj(wbits=31)
            fed = False
            while True:
                comp = f.read(1 << 20)
                if not comp:
                    break
                while comp:
                    fed = True
                    try:
                        out = d.decompress(comp)
                    except zlib.error as exc:
                        self.trouble = ("corrupt_file", f"gzip data is corrupt ({exc})")
                        return
                    if out:
                        yield out
                    if d.eof:
                        comp = d.unused_data
                        d = zlib.decompressobj(wbits=31)
                        fed = False
                    else:
                        comp = b""
            if fed and not d.eof:
                self.trouble = ("truncated_file", 0)


# --------------------------------------------------------------------------------------------
# Parsed chunks
# --------------------------------------------------------------------------------------------


@dataclass
class ParsedChunk:
    """Valid drawings of one block of a file, packed (see `nnlab.data.drawing.StrokeBatch`).

    points are (x, y): uint8 for simplified data, float64 as read for raw data; time is float64
    milliseconds for raw data, else None."""

    kind: str  # "simplified" or "raw"
    points: np.ndarray  # (P, 2) uint8 (simplified) or float64 (raw)
    time: np.ndarray | None  # (P,) float64
    stroke_len: np.ndarray  # (S,) int64
    num_strokes: np.ndarray  # (N,) int64
    key_ids: np.ndarray  # (N,) int64
    recognized: np.ndarray  # (N,) bool
    timestamps: np.ndarray  # (N,) int64 microseconds, MISSING_TIMESTAMP when absent
    countries: np.ndarray  # (N,) S2
    words: np.ndarray  # (N,) int32 index into word_list, -1 unlabelled
    word_list: list[str]
    lines: np.ndarray  # (N,) int64: line (record for .bin) of each drawing in its file
    y: np.ndarray | None = None  # (N,) int64, Kaggle shards' y column (-1 absent)

    def __len__(self) -> int:
        return len(self.key_ids)

    def select(self, keep: np.ndarray) -> ParsedChunk:
        """The drawings where keep is True (a boolean mask over drawings)."""
        if keep.all():
            return self
        keep_s = np.repeat(keep, self.num_strokes)
        keep_p = np.repeat(keep, self.points_per_drawing())
        return ParsedChunk(
            kind=self.kind, points=self.points[keep_p],
            time=None if self.time is None else self.time[keep_p],
            stroke_len=self.stroke_len[keep_s], num_strokes=self.num_strokes[keep],
            key_ids=self.key_ids[keep], recognized=self.recognized[keep],
            timestamps=self.timestamps[keep], countries=self.countries[keep],
            words=self.words[keep], word_list=self.word_list, lines=self.lines[keep],
            y=None if self.y is None else self.y[keep])

    def points_per_drawing(self) -> np.ndarray:
        """(N,) int64: the points of each drawing."""
        cum = np.zeros(len(self.stroke_len) + 1, np.int64)
        np.cumsum(self.stroke_len, out=cum[1:])
        sptr = np.zeros(len(self.num_strokes) + 1, np.int64)
        np.cumsum(self.num_strokes, out=sptr[1:])
        return cum[sptr[1:]] - cum[sptr[:-1]]

    def simplified(self) -> ParsedChunk:
        """The chunk in Google's simplified form (`nnlab.data.simplify`); a simplified chunk as it is."""
        if self.kind == "simplified":
            return self
        points, stroke_len = simplify_packed(self.points, self.stroke_len, self.num_strokes)
        return replace(self, kind="simplified", points=points, time=None, stroke_len=stroke_len)

    def drawings(self) -> Iterator[Drawing]:
        """One `Drawing` per row: int32 (x, y) strokes for simplified data, float64 (x, y, t) for raw."""
        ts = format_timestamps(self.timestamps, "google")
        p = 0
        s = 0
        for d in range(len(self.key_ids)):
            strokes = []
            for _ in range(int(self.num_strokes[d])):
                m = int(self.stroke_len[s])
                if self.kind == "simplified":
                    strokes.append(self.points[p:p + m].astype(np.int32))
                else:
                    strokes.append(np.column_stack([self.points[p:p + m], self.time[p:p + m]]))
                p += m
                s += 1
            w = int(self.words[d])
            yield Drawing(strokes=strokes, word=self.word_list[w] if w >= 0 else None,
                          key_id=int(self.key_ids[d]), countrycode=self.countries[d].decode("ascii", "replace"),
                          recognized=bool(self.recognized[d]), timestamp=ts[d])


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


def detect_format(path: Path) -> str:
    """"ndjson", "csv" or "bin", from the name (a .gz suffix is ignored), else from the content."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in ((".ndjson", "ndjson"), (".jsonl", "ndjson"), (".json", "ndjson"),
                     (".csv", "csv"), (".bin", "bin")):
        if name.endswith(ext):
            return fmt
    src = _ByteSource(path, chunk_bytes=1 << 16)
    head = b""
    for block, _, _ in src.text_blocks():
        head = bytes(block[:4096])
        break
    text = head.lstrip()
    if text.startswith(b"{"):
        return "ndjson"
    if b"drawing" in text.split(b"\n", 1)[0]:
        return "csv"
    raise DataError(f"{path}: cannot tell its format; name it *.ndjson, *.csv or *.bin (optionally .gz)")


def word_of_bin_file(path: Path) -> str:
    """The word of a Google .bin file: 'cat.bin' or 'full_binary_cat.bin' -> 'cat'."""
    name = path.name
    for suffix in (".gz", ".bin"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    if name.startswith("full_binary_"):
        name = name[len("full_binary_"):]
    return label_to_word(name)


def _decode(buf: np.ndarray, start: int, length: int, escaped: bool, quote: str) -> str:
    raw = bytes(buf[start:start + length])
    if not escaped:
        return raw.decode("utf-8", "replace")
    if quote == "json":
        return json.loads(b'"' + raw + b'"')
    return raw.decode("utf-8", "replace").replace('""', '"')


class _ChunkParser:
    """Turns byte blocks of one file into ParsedChunks, applying the reasons and on_bad."""

    def __init__(self, path: Path, fmt: str, on_bad: str, stats: SkipStats,
                 vocabulary: Vocabulary | None):
        self.path, self.fmt, self.on_bad, self.stats, self.vocab = path, fmt, on_bad, stats, vocabulary
        self.expect = 0
        self.roles: np.ndarray | None = None
        self.unit = "record" if fmt == "bin" else "line"
        self._buffers: dict[str, np.ndarray] = {}
        self._words: dict[bytes, str] = {}  # raw bytes -> word

    def _word(self, raw: bytes) -> str:
        w = self._words.get(raw)
        if w is None:
            w = self._words[raw] = label_to_word(raw.decode("utf-8", "replace"))
        return w

    def fail_or_count(self, reason: str, line: int, n: int = 1) -> None:
        if self.on_bad == "error":
            raise DataError(bad_input_message(self.path, line, reason, self.unit))
        self.stats.add(reason, self.path, line, n)

    def set_header(self, header_line: bytes) -> None:
        text = header_line.decode("utf-8-sig", "replace").strip("\r\n")
        cols = next(csv.reader([text]))
        cols = [c.strip() for c in cols]
        roles = [_CSV_ROLES.get(c, ROLE_IGNORE) for c in cols]
        for need in ("drawing", "key_id"):
            if need not in cols:
                raise DataError(f"{self.path}: line 1: the CSV header has no {need!r} column "
                                f"(found {cols}); expected Kaggle's columns")
        if "word" not in cols and "y" in cols and self.vocab is None:
            raise DataError(f"{self.path}: has a 'y' column but no 'word' column: pass the class list "
                            "(classes.txt) so that y can be mapped to words")
        self.roles = np.array(roles, dtype=np.int64)
        self.has_word = "word" in cols
        self.has_y = "y" in cols

    def _scratch(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A reusable buffer of at least `shape` (fresh arrays per block cost page faults)."""
        a = self._buffers.get(name)
        if a is None or a.shape[0] < shape[0]:
            a = np.empty((int(shape[0] * 1.25) + 16,) + shape[1:], dtype)
            self._buffers[name] = a
        return a

    def parse(self, buf: np.ndarray, lines_before: int, nl: int) -> ParsedChunk:
        """Parse a block of whole lines (nl: its number of newlines)."""
        n = len(buf)
        # A point takes at least 4 bytes ("0,0," across its x and y lists), a stroke at least 9
        # ("[[0],[0]]"): these bound the points and strokes of the block.
        n_pts = n // 4 + 16
        rows = self._scratch("rows", (nl + 1, N_FIELDS), np.int64)
        bad = self._scratch("bad", (nl + 1, 2), np.int64)
        px = self._scratch("px", (n_pts,), np.float64)
        py = self._scratch("py", (n_pts,), np.float64)
        pt = self._scratch("pt", (n_pts,), np.float64)  # untouched (never paged in) unless raw
        slen = self._scratch("slen", (n // 9 + 16,), np.int64)
        if self.fmt == "csv":
            R, B, P, S, self.expect = _scan_csv(buf, self.roles, self.expect, lines_before + 1,
                                                px, py, pt, slen, rows, bad)
        else:
            R, B, P, S, self.expect = _scan_ndjson(buf, self.expect, lines_before + 1,
                                                   px, py, pt, slen, rows, bad)
        kind = "raw" if self.expect == 3 else "simplified"
        return self._finish(buf, rows[:R], bad[:B], px[:P], py[:P], pt[:P] if kind == "raw" else None,
                            slen[:S], kind, "json" if self.fmt == "ndjson" else "csv")

    def parse_bin(self, buf: np.ndarray, records_before: int) -> tuple[ParsedChunk, int, int]:
        """Parse the whole records of buf: (chunk, bytes used, records read so far)."""
        n = len(buf)
        cap = n // 17 + 1  # a record takes at least 17 bytes, a point 2
        rows = self._scratch("rows", (cap, N_FIELDS), np.int64)
        bad = self._scratch("bad", (cap, 2), np.int64)
        px = self._scratch("px", (n // 2 + 1,), np.float64)
        py = self._scratch("py", (n // 2 + 1,), np.float64)
        slen = self._scratch("slen", (n // 2 + 1,), np.int64)
        R, B, P, S, used, records = _scan_bin(buf, records_before, px, py, slen, rows, bad)
        chunk = self._finish(buf, rows[:R], bad[:B], px[:P], py[:P], None, slen[:S], "simplified", "bin")
        return chunk, used, records

    def _finish(self, buf, rows, bad, px, py, pt, slen, kind, quote) -> ParsedChunk:
        if len(bad):
            if self.on_bad == "error":
                line, code = bad[0]
                raise DataError(bad_input_message(self.path, int(line), _NAMES[int(code)], self.unit))
            for code in np.unique(bad[:, 1]):
                lines = bad[bad[:, 1] == code, 0]
                self.stats.add(_NAMES[int(code)], self.path, int(lines[0]), len(lines))
        n = len(rows)
        words = np.full(n, -1, np.int32)
        word_list: list[str] = []
        if quote == "bin":
            word_list = [word_of_bin_file(self.path)]
            words[:] = 0
        elif n:
            ws, wl = rows[:, F_WS], rows[:, F_WL]
            esc = (rows[:, F_FLAGS] & FLAG_WORD_ESC) != 0
            # Files hold long runs of one word: decode one word per run, not per row.
            change = _word_changes(buf, ws, wl, esc)
            starts = np.flatnonzero(change)
            ws_s, wl_s, esc_s = ws[starts], wl[starts], esc[starts]
            codes = np.full(len(starts), -1, np.int32)
            index: dict[str, int] = {}
            plain = (wl_s >= 0) & ~esc_s
            if plain.any():  # shuffled files change word every row: no Python loop over runs
                width = max(int(wl_s[plain].max()), 1)
                offs = np.arange(width)
                gather = np.minimum(ws_s[plain][:, None] + offs, len(buf) - 1)
                mat = np.where(offs < wl_s[plain][:, None], buf[gather], 0).astype(np.uint8)
                uniq, inverse = np.unique(np.ascontiguousarray(mat).view(f"S{width}").ravel(),
                                          return_inverse=True)
                ucodes = np.array([index.setdefault(self._word(u), len(index)) for u in uniq.tolist()],
                                  np.int32)
                codes[plain] = ucodes[inverse.ravel()]
            for k in np.flatnonzero((wl_s >= 0) & esc_s):  # rare: escaped quotes in a word
                w = label_to_word(_decode(buf, int(ws_s[k]), int(wl_s[k]), True, quote))
                codes[k] = index.setdefault(w, len(index))
            word_list = list(index)
            run = np.cumsum(change) - 1
            words = codes[run]
        # countries: two bytes per row
        cs, cl = rows[:, F_CS], rows[:, F_CL]
        c0 = np.where(cl >= 1, buf[np.clip(cs, 0, max(len(buf) - 1, 0))] if len(buf) else 0, 0)
        c1 = np.where(cl >= 2, buf[np.clip(cs + 1, 0, max(len(buf) - 1, 0))] if len(buf) else 0, 0)
        countries = np.stack([c0, c1], axis=1).astype(np.uint8).copy().view("S2").ravel() if n else \
            np.zeros(0, "S2")
        cesc = np.flatnonzero((rows[:, F_FLAGS] & FLAG_COUNTRY_ESC) != 0) if n else []
        keep = np.ones(n, bool)
        for r in cesc:  # rare: an escaped country code
            c = _decode(buf, int(cs[r]), int(cl[r]), True, quote).encode("utf-8")
            if len(c) > 2:
                keep[r] = False
                self.fail_or_count("bad_value", int(rows[r, F_LINE]))
            else:
                countries[r] = c
        points = _interleave(px, py, np.empty((len(px), 2), np.uint8 if kind == "simplified" else np.float64))
        chunk = ParsedChunk(
            kind=kind, points=points, time=None if pt is None else pt.copy(),
            stroke_len=slen.copy(),
            num_strokes=rows[:, F_NSTR].copy(), key_ids=rows[:, F_KEY].copy(),
            recognized=rows[:, F_REC] == 1, timestamps=rows[:, F_TS].copy(), countries=countries,
            words=words, word_list=word_list, lines=rows[:, F_LINE].copy(),
            y=rows[:, F_Y].copy() if (self.fmt == "csv" and self.has_y) else None)
        if not keep.all():
            chunk = chunk.select(keep)
        return self._apply_vocabulary(chunk)

    def _apply_vocabulary(self, chunk: ParsedChunk) -> ParsedChunk:
        """Words -> classes when a class list is given: unknown words and y mismatches are bad rows."""
        if self.vocab is None or not len(chunk):
            return chunk
        vocab = self.vocab
        local = np.array([vocab.index(w) for w in chunk.word_list] + [-1], np.int64)
        cls = np.where(chunk.words >= 0, local[chunk.words], -2)  # -2: no word given
        reason = np.zeros(len(chunk), np.int8)  # 0 ok, 1 unknown word, 2 label mismatch
        if chunk.y is not None:
            y = chunk.y
            from_y = cls == -2
            reason[from_y & ((y < 0) | (y >= len(vocab)))] = 1
            cls = np.where(from_y & (y >= 0) & (y < len(vocab)), y, cls)
            reason[(~from_y) & (y >= 0) & (cls >= 0) & (y != cls)] = 2
        reason[(cls == -1) & (reason == 0)] = 1
        for r in np.flatnonzero(reason):
            self.fail_or_count("unknown_word" if reason[r] == 1 else "label_mismatch", int(chunk.lines[r]))
        chunk.word_list = list(vocab.words)
        chunk.words = np.where(cls >= 0, cls, -1).astype(np.int32)
        return chunk.select(reason == 0)


def iter_chunks(path: str | os.PathLike, *, on_bad: str = "skip", stats: SkipStats | None = None,
                classes: Sequence[str] | Vocabulary | None = None, fmt: str | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[ParsedChunk]:
    """Stream the valid drawings of one file (any supported format, gzip or not) as packed chunks.

    Bad rows are counted in `stats` by reason (on_bad="skip") or raise DataError naming the file,
    line and reason (on_bad="error"). With `classes`, words outside it are bad rows
    (unknown_word) and chunk.words index the class list; otherwise they index chunk.word_list.

    Labels always come from the word (Kaggle labels with underscores are mapped to words). A
    shard's ``y`` column is only checked against the word when `classes` is given (a mismatch
    is a label_mismatch row), and used alone only when the file has no word column."""
    check_on_bad(on_bad)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    stats = stats if stats is not None else SkipStats()
    vocab = classes if isinstance(classes, Vocabulary) or classes is None else Vocabulary(list(classes))
    fmt = fmt or detect_format(path)
    parser = _ChunkParser(path, fmt, on_bad, stats, vocab)
    src = _ByteSource(path, chunk_bytes)
    if fmt == "bin":
        pending = b""
        records = 0
        for raw in src.blocks():
            pending += raw
            if len(pending) < chunk_bytes:
                continue
            chunk, used, records = parser.parse_bin(np.frombuffer(pending, np.uint8), records)
            pending = pending[used:]
            if len(chunk):
                yield chunk
        chunk, used, records = parser.parse_bin(np.frombuffer(pending, np.uint8), records)
        if len(chunk):
            yield chunk
        if src.trouble is not None:
            parser.fail_or_count(src.trouble[0], records + 1)
        elif used < len(pending):
            parser.fail_or_count("truncated_file", records + 1)
        return
    first = True
    for block, lines_before, nl in src.text_blocks():
        if first and fmt == "csv":
            cut = int(np.argmax(block == 10)) + 1 if nl else len(block)
            parser.set_header(bytes(block[:cut]))
            block, lines_before, nl = block[cut:], lines_before + 1, max(nl - 1, 0)
        first = False
        if len(block):
            chunk = parser.parse(block, lines_before, nl)
            if len(chunk):
                yield chunk
    if first and fmt == "csv" and src.trouble is None:
        raise DataError(f"{path}: empty CSV file (no header line)")
    if src.trouble is not None:
        reason, where = src.trouble
        line = where if isinstance(where, int) else 1
        parser.fail_or_count(reason, line)


def read_drawings(path: str | os.PathLike, *, on_bad: str = "skip", stats: SkipStats | None = None,
                  classes: Sequence[str] | Vocabulary | None = None,
                  dedupe: bool = True) -> Iterator[Drawing]:
    """Stream the drawings of a file as `Drawing` objects (see `iter_chunks` for the options).

    With dedupe, a key_id seen before in this file is a bad row (duplicate_key_id)."""
    stats = stats if stats is not None else SkipStats()
    seen: set[int] = set()
    for chunk in iter_chunks(path, on_bad=on_bad, stats=stats, classes=classes):
        for d, line in zip(chunk.drawings(), chunk.lines):
            if dedupe:
                if d.key_id in seen:
                    if on_bad == "error":
                        raise DataError(bad_input_message(path, int(line), "duplicate_key_id"))
                    stats.add("duplicate_key_id", path, int(line))
                    continue
                seen.add(d.key_id)
            yield d


def find_sources(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the data files they hold, in a deterministic order
    (arguments in the given order; a folder's files sorted by path)."""
    out: list[Path] = []
    pattern = re.compile(r"\.(ndjson|jsonl|json|csv|bin)(\.gz)?$", re.IGNORECASE)
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and pattern.search(f.name))
            if not found:
                raise DataError(f"{p}: no .ndjson, .csv or .bin files (optionally .gz) in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in out:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            unique.append(p)
    return unique


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


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
    import gzip

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
    import struct

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
