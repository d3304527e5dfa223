"""Parsed chunks: the valid drawings of one block of a file as packed arrays, and the readers
built on them (`iter_chunks` for packed chunks, `read_drawings` for one `Drawing` at a time).

Bad rows are never shifted or repaired: each is skipped and counted under one reason
(`nnlab.ingest.reasons.REASONS`), or, with ``on_bad="error"``, the first one raises `DataError`
naming the file, the line (the record for ``.bin``) and the reason.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.ingest.reasons import _NAMES, MISSING_TIMESTAMP, SkipStats, bad_input_message, check_on_bad
from nnlab.ingest.scan_bin import _scan_bin
from nnlab.ingest.scan_csv import _CSV_ROLES, ROLE_IGNORE, _scan_csv
from nnlab.ingest.scan_ndjson import _scan_ndjson
from nnlab.ingest.scan_values import (
    F_CL,
    F_CS,
    F_FLAGS,
    F_KEY,
    F_LINE,
    F_NSTR,
    F_REC,
    F_TS,
    F_WL,
    F_WS,
    F_Y,
    FLAG_COUNTRY_ESC,
    FLAG_WORD_ESC,
    N_FIELDS,
    _interleave,
    _word_changes,
)
from nnlab.ingest.sketchrnn import SPLIT_CODES, iter_sketchrnn, synthetic_key_ids, word_of_npz_file
from nnlab.ingest.sources import CHUNK_BYTES, _ByteSource, detect_format, word_of_bin_file
from nnlab.ingest.writers import format_timestamps
from nnlab.strokes.drawing import Drawing
from nnlab.strokes.simplify import simplify_packed
from nnlab.strokes.stroke3 import packed_rows_to_points
from nnlab.strokes.vocabulary import Vocabulary, label_to_word


@dataclass
class ParsedChunk:
    """Valid drawings of one block of a file, packed (see `nnlab.strokes.drawing.StrokeBatch`).

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
    splits: np.ndarray | None = None  # (N,) int8 split code the file gives (sketch-rnn), -1 or None: none

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
            y=None if self.y is None else self.y[keep],
            splits=None if self.splits is None else self.splits[keep])

    def points_per_drawing(self) -> np.ndarray:
        """(N,) int64: the points of each drawing."""
        cum = np.zeros(len(self.stroke_len) + 1, np.int64)
        np.cumsum(self.stroke_len, out=cum[1:])
        sptr = np.zeros(len(self.num_strokes) + 1, np.int64)
        np.cumsum(self.num_strokes, out=sptr[1:])
        return cum[sptr[1:]] - cum[sptr[:-1]]

    def simplified(self) -> ParsedChunk:
        """The chunk in Google's simplified form (`nnlab.strokes.simplify`); a simplified chunk as it is."""
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


_INVALID = -3  # word code of a row whose word is not UTF-8
_BOM = np.frombuffer(b"\xef\xbb\xbf", np.uint8)


def _decode(buf: np.ndarray, start: int, length: int, escaped: bool, quote: str) -> str:
    """A text field as written (UnicodeDecodeError when it is not UTF-8)."""
    raw = bytes(buf[start:start + length])
    if not escaped:
        return raw.decode("utf-8")
    if quote == "json":
        return json.loads(raw.decode("utf-8").join('""'))
    return raw.decode("utf-8").replace('""', '"')


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

    def _word(self, raw: bytes) -> str | None:
        """The word of raw bytes, None when they are not UTF-8 (an invalid_utf8 row)."""
        if raw not in self._words:
            try:
                self._words[raw] = label_to_word(raw.decode("utf-8"))
            except UnicodeDecodeError:
                self._words[raw] = None
        return self._words[raw]

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
                ucodes = np.array([_INVALID if (w := self._word(u)) is None else index.setdefault(w, len(index))
                                   for u in uniq.tolist()], np.int32)
                codes[plain] = ucodes[inverse.ravel()]
            for k in np.flatnonzero((wl_s >= 0) & esc_s):  # rare: escaped quotes in a word
                try:
                    w = label_to_word(_decode(buf, int(ws_s[k]), int(wl_s[k]), True, quote))
                    codes[k] = index.setdefault(w, len(index))
                except (UnicodeDecodeError, ValueError):
                    codes[k] = _INVALID
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
        keep = words != _INVALID
        for r in np.flatnonzero(~keep):
            self.fail_or_count("invalid_utf8", int(rows[r, F_LINE]))
        words[~keep] = -1
        for r in cesc:  # rare: an escaped country code
            try:
                c = _decode(buf, int(cs[r]), int(cl[r]), True, quote).encode("utf-8")
            except (UnicodeDecodeError, ValueError):
                c = b"bad"
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
    if fmt == "sketchrnn":
        yield from _sketchrnn_chunks(path, parser)
        return
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
    for block, lines_before, nl in src.text_blocks(quoted=fmt == "csv"):
        while src.long_lines:
            parser.fail_or_count("line_too_long", src.long_lines.pop(0))
        if first and fmt == "csv":
            cut = int(np.argmax(block == 10)) + 1 if nl else len(block)
            parser.set_header(bytes(block[:cut]))
            block, lines_before, nl = block[cut:], lines_before + 1, max(nl - 1, 0)
        if first and len(block) >= 3 and (block[:3] == _BOM).all():
            block[:3] = 32  # a UTF-8 byte order mark: blanks, which the scanners skip
        first = False
        if len(block):
            chunk = parser.parse(block, lines_before, nl)
            if len(chunk):
                yield chunk
    for line in src.long_lines:
        parser.fail_or_count("line_too_long", line)
    if first and fmt == "csv" and src.trouble is None:
        raise DataError(f"{path}: empty CSV file (no header line)")
    if src.trouble is not None:
        reason, where = src.trouble
        line = where if isinstance(where, int) else 1
        parser.fail_or_count(reason, line)


def _sketchrnn_chunks(path: Path, parser: _ChunkParser) -> Iterator[ParsedChunk]:
    """The drawings of a sketch-rnn file as simplified chunks with their split; a drawing whose rows
    are not whole offsets and 0/1 pen lifts (bad_value), or whose points leave 0..255
    (out_of_range), is a bad row, numbered within its split."""
    word = label_to_word(word_of_npz_file(path))
    for split, first, drawings in iter_sketchrnn(path):
        parser.unit = f"{split} drawing"
        n = len(drawings)
        lengths = np.array([len(d) for d in drawings], np.int64)
        rows = np.concatenate([np.asarray(d, np.float64) for d in drawings]) if lengths.sum() else np.zeros((0, 3))
        owner = np.repeat(np.arange(n), lengths)
        reason = np.where(lengths == 0, _NAMES.index("empty_drawing"), 0)
        bad_row = ~np.isfinite(rows).all(axis=1)
        reason[owner[bad_row]] = _NAMES.index("non_finite")
        rows[bad_row] = 0
        odd = (rows != np.round(rows)).any(axis=1) | ((rows[:, 2] != 0) & (rows[:, 2] != 1))
        reason[owner[odd & ~bad_row]] = _NAMES.index("bad_value")
        points, stroke_len, num_strokes = packed_rows_to_points(rows.astype(np.int64), lengths)
        outside = ((points < 0) | (points > 255)).any(axis=1)  # one point per row
        reason[(reason == 0) & np.isin(np.arange(n), owner[outside])] = _NAMES.index("out_of_range")
        for r in np.flatnonzero(reason):
            parser.fail_or_count(_NAMES[int(reason[r])], first + int(r) + 1)
        idx = np.arange(first, first + n)
        chunk = ParsedChunk(
            kind="simplified", points=np.clip(points, 0, 255).astype(np.uint8), time=None, stroke_len=stroke_len,
            num_strokes=num_strokes, key_ids=synthetic_key_ids(word, split, idx), recognized=np.ones(n, bool),
            timestamps=np.full(n, MISSING_TIMESTAMP, np.int64), countries=np.zeros(n, "S2"),
            words=np.zeros(n, np.int32), word_list=[word], lines=idx + 1,
            splits=np.full(n, SPLIT_CODES[split], np.int8)).select(reason == 0)
        chunk = parser._apply_vocabulary(chunk)
        if len(chunk):
            yield chunk


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
