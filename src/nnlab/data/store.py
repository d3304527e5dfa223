"""The packed, memory-mapped stroke store: any drawing in O(1), any shuffle free.

A store is a directory of ``.npy`` files opened with ``np.load(mmap_mode="r")`` (no pickle):

==================  =========================  ==============================================
file                shape, dtype               meaning
==================  =========================  ==============================================
points.npy          (P, 2) uint8 | float32     x, y of every point (uint8: simplified data)
time.npy            (P,) float32               ms since the drawing's first point (raw only)
stroke_ptr.npy      (S + 1,) int64             stroke s is points[stroke_ptr[s]:stroke_ptr[s+1]]
drawing_ptr.npy     (N + 1,) int64             drawing d owns strokes drawing_ptr[d]:[d+1]
labels.npy          (N,) int16                 class index into classes.txt, -1 = unlabelled
key_ids.npy         (N,) int64                 Google's key_id
countries.npy       (N,) S2                    country code
recognized.npy      (N,) bool                  whether the game recognized the drawing
timestamps.npy      (N,) int64                 microseconds since the epoch (int64 min: absent)
classes.txt         one word per line          words with spaces, in class order
meta.json           object                     format version, kind, counts, skips, sources
==================  =========================  ==============================================

`prepare` builds a store from files of any format `nnlab.data.quickdraw` reads, parsing the
files in parallel (one process per file) into temporary per-file arrays on disk, then writing the
store with plain streaming writes, a block of drawings at a time, so that memory does not grow
with the number of drawings beyond a few bytes per drawing (key_ids and labels for the
duplicate and per-class checks). The output does not depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from nnlab.data.drawing import Drawing, StrokeBatch
from nnlab.data.quickdraw import (CHUNK_BYTES, MISSING_TIMESTAMP, ParsedChunk, SkipStats, Vocabulary,
                                  bad_input_message, check_on_bad, detect_format, find_sources,
                                  format_timestamps, iter_chunks, label_to_word, parse_timestamps, sort_words,
                                  write_bin, write_csv, write_ndjson)
from nnlab.data.splits import key_id_split
from nnlab.errors import DataError
from nnlab.progress import progress

FORMAT = "nnlab-strokes"
VERSION = 1
MAX_CLASSES = np.iinfo(np.int16).max


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[k], starts[k] + lengths[k]) without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.repeat(np.asarray(starts, np.int64) - offsets, lengths) + np.arange(total, dtype=np.int64)


class StrokeStore:
    """Drawings packed flat (see the module doc), memory-mapped from disk or held in memory."""

    def __init__(self, *, points: np.ndarray, stroke_ptr: np.ndarray, drawing_ptr: np.ndarray,
                 labels: np.ndarray, key_ids: np.ndarray, countries: np.ndarray,
                 recognized: np.ndarray, classes: Sequence[str], meta: dict,
                 time: np.ndarray | None = None, timestamps: np.ndarray | None = None,
                 path: Path | None = None):
        self.points = points
        self.time = time
        self.stroke_ptr = stroke_ptr
        self.drawing_ptr = drawing_ptr
        self.labels = labels
        self.key_ids = key_ids
        self.countries = countries
        self.recognized = recognized
        self.timestamps = timestamps if timestamps is not None else \
            np.full(len(labels), MISSING_TIMESTAMP, np.int64)
        self.classes = list(classes)
        self.meta = meta
        self.path = path
        self._vocab = Vocabulary(self.classes)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> StrokeStore:
        """Open a store directory, memory-mapped. DataError if it is missing, corrupt or of
        another format version."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{path}: not a stroke store (no meta.json); build one with "
                            "`nnlab data prepare` or `nnlab data synth`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path}: unreadable ({exc}); rebuild the store") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: not an {FORMAT} store")
        if meta.get("version") != VERSION:
            raise DataError(f"{path}: store format version {meta.get('version')}, this nnlab reads "
                            f"version {VERSION}; rebuild it with `nnlab data prepare`")
        try:
            classes = (path / "classes.txt").read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataError(f"{path / 'classes.txt'}: {exc.strerror}; rebuild the store") from exc

        def load(name: str, required: bool = True) -> np.ndarray | None:
            f = path / f"{name}.npy"
            if not f.is_file():
                if required:
                    raise DataError(f"{f}: missing; the store is incomplete, rebuild it")
                return None
            try:
                a = np.load(f, mmap_mode="r", allow_pickle=False)
            except ValueError:
                try:  # numpy cannot memory-map an empty array
                    a = np.load(f, allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise DataError(f"{f}: corrupt ({exc}); rebuild the store") from exc
            except OSError as exc:
                raise DataError(f"{f}: corrupt ({exc}); rebuild the store") from exc
            return a

        store = cls(points=load("points"), time=load("time", required=False),
                    stroke_ptr=load("stroke_ptr"), drawing_ptr=load("drawing_ptr"),
                    labels=load("labels"), key_ids=load("key_ids"), countries=load("countries"),
                    recognized=load("recognized"), timestamps=load("timestamps", required=False),
                    classes=classes, meta=meta, path=path)
        store._validate()
        return store

    def _validate(self) -> None:
        where = self.path or "store"
        n = len(self.drawing_ptr) - 1
        checks = [
            (self.points.ndim == 2 and self.points.shape[1] == 2, "points must be (P, 2)"),
            (self.points.dtype in (np.uint8, np.float32), "points must be uint8 or float32"),
            (n >= 0, "drawing_ptr is empty"),
            (self.stroke_ptr.dtype == np.int64 and self.drawing_ptr.dtype == np.int64,
             "stroke_ptr and drawing_ptr must be int64"),
            (len(self.stroke_ptr) >= 1 and int(self.stroke_ptr[-1]) == len(self.points),
             "stroke_ptr does not end at the number of points"),
            (n < 0 or int(self.drawing_ptr[-1]) == len(self.stroke_ptr) - 1,
             "drawing_ptr does not end at the number of strokes"),
            (len(self.labels) == n and self.labels.dtype == np.int16, "labels must be (N,) int16"),
            (len(self.key_ids) == n, "key_ids length differs from the drawings"),
            (len(self.countries) == n, "countries length differs from the drawings"),
            (len(self.recognized) == n, "recognized length differs from the drawings"),
            (len(self.timestamps) == n, "timestamps length differs from the drawings"),
            (self.time is None or len(self.time) == len(self.points), "time length differs from points"),
            (len(self.classes) == self.meta.get("num_classes", len(self.classes)),
             "classes.txt does not match meta.json's num_classes"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DataError(f"{where}: corrupt store: {msg}; rebuild it")

    @classmethod
    def from_drawings(cls, drawings: Iterable[Drawing], classes: Sequence[str] | None = None, *,
                      meta: dict | None = None) -> StrokeStore:
        """An in-memory store of these drawings (same API as an opened one; `save` writes it).

        classes: the class list (words or Kaggle labels), default the drawings' words in Kaggle
        order; a word outside it is a DataError. Simplified (uint8) when every stroke is (n, 2)
        integers in 0..255, raw (float32, time kept when every stroke has it) otherwise."""
        drawings = list(drawings)
        words = [d.word for d in drawings]
        vocab = Vocabulary(classes) if classes is not None else \
            Vocabulary.from_words(w for w in words if w is not None)
        if len(vocab) > MAX_CLASSES:
            raise DataError(f"{len(vocab)} classes: a store holds at most {MAX_CLASSES}")
        labels = np.array([vocab.index(w) if w is not None else -1 for w in words], np.int16)
        unknown = [w for w, lab in zip(words, labels) if w is not None and lab < 0]
        if unknown:
            raise DataError(f"words not in the class list: {sorted(set(unknown))[:10]}")
        batch = StrokeBatch.from_drawings(drawings)
        pts = batch.points
        if len(pts) and not np.isfinite(pts).all() or (batch.time is not None and not np.isfinite(batch.time).all()):
            raise DataError("from_drawings: a coordinate or time is NaN or infinite")
        all_xy = all(np.asarray(s).shape[1] == 2 for d in drawings for s in d.strokes)
        simplified = all_xy and (len(pts) == 0 or (pts.min() >= 0 and pts.max() <= 255
                                                   and np.array_equal(pts, np.round(pts))))
        store = cls(
            points=pts.astype(np.uint8) if simplified else pts.astype(np.float32),
            time=None if simplified or batch.time is None else batch.time.astype(np.float32),
            stroke_ptr=batch.stroke_ptr.astype(np.int64), drawing_ptr=batch.drawing_ptr.astype(np.int64),
            labels=labels, key_ids=np.array([d.key_id for d in drawings], np.int64),
            countries=np.array([d.countrycode.encode("ascii", "replace")[:2] for d in drawings], "S2"),
            recognized=np.array([bool(d.recognized) for d in drawings], bool),
            timestamps=parse_timestamps([d.timestamp for d in drawings]),
            classes=vocab.words, meta={})
        store.meta = _base_meta("simplified" if simplified else "raw", (meta or {}).get("source_kind", "drawings"),
                                store.classes, labels, store.recognized, num_strokes=len(store.stroke_ptr) - 1,
                                num_points=len(store.points), has_time=store.time is not None)
        store.meta.update(meta or {})
        return store

    def save(self, path: str | os.PathLike) -> None:
        """Write the store layout to a directory (replacing a store already there)."""
        path = Path(path)
        with _staging(path) as tmp:
            for name in ("points", "stroke_ptr", "drawing_ptr", "labels", "key_ids", "countries",
                         "recognized", "timestamps"):
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
            if self.time is not None:
                np.save(tmp / "time.npy", np.ascontiguousarray(self.time))
            _write_classes_meta(tmp, self.classes, self.meta)
        self.path = path

    # ---- access ---------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocab

    @property
    def kind(self) -> str:
        """"simplified" (uint8 points) or "raw" (float32 points)."""
        return "simplified" if self.points.dtype == np.uint8 else "raw"

    @property
    def has_time(self) -> bool:
        return self.time is not None

    def __len__(self) -> int:
        return len(self.drawing_ptr) - 1

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < -n or i >= n:
            raise IndexError(f"drawing {i} out of range for a store of {n}")
        return i + n if i < 0 else i

    def __getitem__(self, i: int) -> Drawing:
        """Drawing i with its metadata (int32 (x, y) strokes when simplified, float32 when raw)."""
        i = self._index(i)
        return next(self.iter_drawings(np.array([i])))

    def __iter__(self) -> Iterator[Drawing]:
        return self.iter_drawings()

    def word(self, i: int) -> str | None:
        lab = int(self.labels[self._index(i)])
        return self.classes[lab] if lab >= 0 else None

    def batch(self, indices: Sequence[int] | np.ndarray) -> StrokeBatch:
        """Drawings `indices` packed as a StrokeBatch (points in the store's dtype, time kept),
        gathered with array indexing only."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"drawing index out of range for a store of {n}")
        idx = np.where(idx < 0, idx + n, idx)
        d0 = np.asarray(self.drawing_ptr[idx])
        d1 = np.asarray(self.drawing_ptr[idx + 1])
        nstrokes = d1 - d0
        strokes = _ranges(d0, nstrokes)
        lens = np.asarray(self.stroke_ptr[strokes + 1]) - np.asarray(self.stroke_ptr[strokes])
        p0 = np.asarray(self.stroke_ptr[d0])
        p1 = np.asarray(self.stroke_ptr[d1])
        pidx = _ranges(p0, p1 - p0)
        stroke_ptr = np.zeros(len(strokes) + 1, np.int64)
        np.cumsum(lens, out=stroke_ptr[1:])
        drawing_ptr = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(nstrokes, out=drawing_ptr[1:])
        return StrokeBatch(points=np.asarray(self.points[pidx]), stroke_ptr=stroke_ptr,
                           drawing_ptr=drawing_ptr,
                           time=None if self.time is None else np.asarray(self.time[pidx]))

    def iter_drawings(self, indices: Sequence[int] | np.ndarray | None = None,
                      block: int = 4096) -> Iterator[Drawing]:
        """Drawings (all, or `indices` in that order) with metadata, a block at a time."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        for a in range(0, len(idx), block):
            sel = idx[a:a + block]
            b = self.batch(sel)
            sel = np.where(sel < 0, sel + len(self), sel)
            labels = np.asarray(self.labels[sel])
            keys = np.asarray(self.key_ids[sel])
            cc = np.asarray(self.countries[sel])
            rec = np.asarray(self.recognized[sel])
            ts = format_timestamps(np.asarray(self.timestamps[sel]), "google")
            pts = b.points.astype(np.int32) if self.kind == "simplified" else b.points
            xyt = pts if b.time is None else np.column_stack([pts, b.time])
            for k in range(len(sel)):
                s0, s1 = b.drawing_ptr[k], b.drawing_ptr[k + 1]
                strokes = [xyt[b.stroke_ptr[s]:b.stroke_ptr[s + 1]] for s in range(s0, s1)]
                lab = int(labels[k])
                yield Drawing(strokes=strokes, word=self.classes[lab] if lab >= 0 else None,
                              key_id=int(keys[k]), countrycode=cc[k].decode("ascii", "replace"),
                              recognized=bool(rec[k]), timestamp=ts[k])

    def indices_of(self, word_or_words: str | Iterable[str]) -> np.ndarray:
        """Indices of the drawings of a word (or any of several); Kaggle labels work too."""
        words = [word_or_words] if isinstance(word_or_words, str) else list(word_or_words)
        wanted = []
        for w in words:
            k = self._vocab.index(w)
            if k < 0:
                import difflib

                close = difflib.get_close_matches(label_to_word(w), self.classes, n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise DataError(f"no class {w!r} in this store ({len(self.classes)} classes){hint}")
            wanted.append(k)
        return np.flatnonzero(np.isin(np.asarray(self.labels), np.array(wanted, np.int16)))

    def split(self, val_fraction: float = 0.1, test_fraction: float = 0.0,
              salt: str = "nnlab") -> dict[str, np.ndarray]:
        """train/val/test indices by a hash of key_id: a drawing's split never changes when
        drawings are added or removed."""
        return key_id_split(np.asarray(self.key_ids), val_fraction, test_fraction, salt=salt)

    def counts(self) -> dict[str, int]:
        """Drawings per class, in class order."""
        c = np.bincount(np.asarray(self.labels)[np.asarray(self.labels) >= 0].astype(np.int64),
                        minlength=len(self.classes))
        return {w: int(n) for w, n in zip(self.classes, c)}


# --------------------------------------------------------------------------------------------
# Writing helpers
# --------------------------------------------------------------------------------------------


def _base_meta(kind: str, source_kind: str, classes: Sequence[str], labels: np.ndarray, recognized: np.ndarray, *,
               num_strokes: int, num_points: int, has_time: bool) -> dict:
    """The meta.json fields every store has, from its class list, per-drawing labels and flags and sizes."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0].astype(np.int64), minlength=len(classes))
    return {
        "format": FORMAT, "version": VERSION, "kind": kind, "source_kind": source_kind,
        "num_drawings": len(labels), "num_strokes": num_strokes, "num_points": num_points,
        "num_classes": len(classes), "has_time": has_time,
        "unlabelled": int((labels < 0).sum()),
        "not_recognized": int((~np.asarray(recognized, bool)).sum()),
        "counts": {w: int(c) for w, c in zip(classes, counts)},
    }


def _write_classes_meta(folder: Path, classes: Sequence[str], meta: dict) -> None:
    (folder / "classes.txt").write_text("".join(f"{w}\n" for w in classes), encoding="utf-8")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                      encoding="utf-8")


class _staging:
    """Build a directory next to `path`, then swap it in (replacing an older store only)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        p = self.path
        if p.exists() and not (p / "meta.json").is_file() and (not p.is_dir() or any(p.iterdir())):
            raise DataError(f"{p}: exists and is not a stroke store; choose another --out")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.partial-", dir=p.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)


class _NpyWriter:
    """Streams an .npy file of a known final shape: header first, then rows appended."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]):
        self.f = open(path, "wb")
        self.dtype = np.dtype(dtype)
        self.expected = int(np.prod(shape)) * self.dtype.itemsize
        self.written = 0
        np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": shape})

    def write(self, a: np.ndarray) -> None:
        b = np.ascontiguousarray(a, dtype=self.dtype).tobytes()
        self.f.write(b)
        self.written += len(b)

    def close(self) -> None:
        self.f.close()
        if self.written != self.expected:
            raise AssertionError(f"{self.f.name}: wrote {self.written} bytes, expected {self.expected}")


# --------------------------------------------------------------------------------------------
# prepare: files -> per-file spills (parallel) -> one store
# --------------------------------------------------------------------------------------------

class _Spill:
    """The parsed drawings of one input file, on disk: one record of raw arrays per chunk, in
    the order of `_record_layout` (one file per input: creating files is slow on some disks)."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None
        self.kind: str | None = None
        self.has_time = False
        self.records: list[dict] = []
        self.n = 0

    def append(self, c: ParsedChunk, word_codes: np.ndarray) -> None:
        if self.f is None:
            self.f = open(self.path, "wb")
            self.kind = c.kind
            self.has_time = c.time is not None
        arrays = {"pts": c.points, "time": c.time, "slen": c.stroke_len, "nstr": c.num_strokes,
                  "npts": c.points_per_drawing(), "key": c.key_ids, "rec": c.recognized,
                  "ts": c.timestamps, "cc": c.countries, "word": word_codes, "line": c.lines}
        rec = {"off": self.f.tell(), "n": len(c), "s": len(c.stroke_len), "p": len(c.points)}
        for name, dtype, _count in _record_layout(self.kind, self.has_time, rec):
            self.f.write(np.ascontiguousarray(arrays[name], dtype=dtype).tobytes())
        self.records.append(rec)
        self.n += rec["n"]

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def _record_layout(kind: str, has_time: bool, rec: dict) -> list[tuple[str, object, int]]:
    """(name, dtype, element count) of the arrays of one spill record, in file order."""
    n, s, p = rec["n"], rec["s"], rec["p"]
    pdtype = np.uint8 if kind == "simplified" else np.float32
    layout = [("pts", pdtype, 2 * p)]
    if has_time:
        layout.append(("time", np.float32, p))
    layout += [("slen", np.int64, s), ("nstr", np.int64, n), ("npts", np.int64, n), ("key", np.int64, n),
               ("rec", np.bool_, n), ("ts", np.int64, n), ("cc", "S2", n), ("word", np.int32, n),
               ("line", np.int64, n)]
    return layout


def _read_record(summary: dict, rec: dict, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays `names` of one spill record, read with plain reads (no memory-mapping)."""
    out = {}
    off = rec["off"]
    for name, dtype, count in _record_layout(summary["kind"], summary["has_time"], rec):
        size = np.dtype(dtype).itemsize * count
        if name in names:
            a = np.fromfile(summary["spill"], dtype=dtype, count=count, offset=off)
            out[name] = a.reshape(-1, 2) if name == "pts" else a
        off += size
    return out


def _read_all(summary: dict, name: str, dtype) -> np.ndarray:
    parts = [_read_record(summary, rec, [name])[name] for rec in summary["records"]]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _prepare_file(job: tuple) -> dict:
    """Worker: parse one file into a spill folder; returns its summary (counts, words, skips)."""
    path, spill_path, opts = job
    path = Path(path)
    stats = SkipStats()
    filtered: Counter = Counter()
    spill = _Spill(Path(spill_path))
    words: dict[str, int] = {}
    vocab = Vocabulary(opts["classes"]) if opts["classes"] is not None else None
    max_per = opts["max_per_class"]
    per_word: Counter = Counter()
    seen: set[int] = set()
    fmt = detect_format(path)
    try:
        for chunk in iter_chunks(path, on_bad=opts["on_bad"], stats=stats, classes=vocab, fmt=fmt,
                                 chunk_bytes=opts["chunk_bytes"]):
            if opts["recognized_only"]:
                filtered["not_recognized"] += int((~chunk.recognized).sum())
                chunk = chunk.select(chunk.recognized)
            if opts["simplify"]:
                chunk = chunk.simplified()
            local = np.array([words.setdefault(w, len(words)) for w in chunk.word_list] + [-1], np.int32)
            codes = local[chunk.words]  # -1 (unlabelled) picks the trailing -1
            if max_per is not None and len(chunk):
                # First N per class in file order; duplicates found here must not take a place.
                keep = np.ones(len(chunk), bool)
                for r in range(len(chunk)):
                    k = int(chunk.key_ids[r])
                    if k in seen:
                        keep[r] = False
                        if opts["on_bad"] == "error":
                            raise DataError(bad_input_message(path, int(chunk.lines[r]), "duplicate_key_id"))
                        stats.add("duplicate_key_id", path, int(chunk.lines[r]))
                        continue
                    c = int(codes[r])
                    if c >= 0 and per_word[c] >= max_per:
                        keep[r] = False
                        filtered["over_max_per_class"] += 1
                        continue
                    seen.add(k)
                    per_word[c] += 1
                chunk = chunk.select(keep)
                codes = codes[keep]
            if len(chunk):
                spill.append(chunk, codes)
    finally:
        spill.close()
    return {"path": str(path), "format": fmt, "kind": spill.kind, "n": spill.n,
            "spill": str(spill.path), "has_time": spill.has_time,
            "records": spill.records, "words": list(words), "skipped": stats.as_dict(),
            "examples": stats.examples, "filtered": dict(filtered)}


def prepare(sources: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
            simplify: bool = False, recognized_only: bool = False, max_per_class: int | None = None,
            on_bad: str = "skip", workers: int | None = None, *,
            classes: Sequence[str] | str | os.PathLike | None = None,
            chunk_bytes: int = CHUNK_BYTES) -> StrokeStore:
    """Build a store at `out` from files or folders of Quick, Draw! data (any supported format).

    simplify: apply Google's simplification to raw drawings (simplified ones pass unchanged);
    without it, raw and simplified files cannot be mixed. recognized_only: drop drawings the
    game did not recognize. max_per_class: keep the first N drawings of each class (file order).
    on_bad: "skip" counts bad rows by reason in meta.json, "error" stops at the first, naming
    file, line and reason. workers: processes parsing files in parallel (default: CPUs, at
    most one per file). classes: a class list (or a classes.txt path) fixing the vocabulary and
    its order; other words are bad rows. Returns the opened store."""
    check_on_bad(on_bad)
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"max_per_class must be >= 1, got {max_per_class}")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = find_sources(sources)
    if isinstance(classes, (str, os.PathLike)):
        classes = Vocabulary.load(classes).words
    out = Path(out)
    opts = {"simplify": simplify, "recognized_only": recognized_only, "max_per_class": max_per_class,
            "on_bad": on_bad, "classes": list(classes) if classes is not None else None,
            "chunk_bytes": chunk_bytes}
    workers = max(1, min(workers or os.cpu_count() or 1, len(files)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.spill-", dir=out.parent))
    try:
        jobs = [(str(f), str(tmp_root / f"{k:06d}.spill"), opts) for k, f in enumerate(files)]
        summaries = _run_jobs(jobs, workers)
        store = _merge(summaries, tmp_root, out, opts)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return store


def _run_jobs(jobs: list[tuple], workers: int) -> list[dict]:
    bar = progress(total=len(jobs), desc="parse", unit="file")
    try:
        if workers == 1:
            out = []
            for job in jobs:
                out.append(_prepare_file(job))
                bar.update(1)
            return out
        # fork where there is one: workers only run numpy/numba code, and spawn would make every
        # script that calls prepare() need an `if __name__ == "__main__"` guard
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        if ctx.get_start_method() == "fork":
            _warm_up()  # compile (or load) the numba scanners once, before the workers inherit them
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_prepare_file, job) for job in jobs]
            for fut in futures:
                fut.add_done_callback(lambda _f: bar.update(1))
            results = []
            try:
                for fut in futures:  # in file order, so the first bad file is the one reported
                    results.append(fut.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            return results
    finally:
        bar.close()


def _warm_up() -> None:
    """Run every scanner once on tiny files, so that forked workers inherit compiled code."""
    from nnlab.data.simplify import simplify_packed

    with tempfile.TemporaryDirectory() as tmp:
        d = [Drawing(strokes=[np.array([[0, 0], [255, 255]])], word="a b", key_id=1,
                     timestamp="2017-01-01 00:00:00 UTC")]
        write_ndjson(d, Path(tmp) / "w.ndjson")
        write_csv(d, Path(tmp) / "w.csv")
        write_bin(d, Path(tmp) / "w.bin")
        write_ndjson([Drawing(strokes=[np.array([[0.5, 1.0, 0.0], [2.0, 3.0, 5.0]])], word="a", key_id=2)],
                     Path(tmp) / "r.ndjson")
        for name in ("w.ndjson", "w.csv", "w.bin", "r.ndjson"):
            list(iter_chunks(Path(tmp) / name))
    simplify_packed(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([2]), np.array([1]))


def _merge(summaries: list[dict], tmp_root: Path, out: Path, opts: dict) -> StrokeStore:
    """Global checks (kinds, duplicates, per-class cap, vocabulary), then the store's arrays."""
    stats = SkipStats()
    filtered: Counter = Counter()
    for s in summaries:
        stats.merge(SkipStats(Counter(s["skipped"]), s["examples"]))
        filtered.update(s["filtered"])
    kinds = {s["kind"] for s in summaries if s["n"]}
    if len(kinds) > 1:
        raw = [s["path"] for s in summaries if s["kind"] == "raw"][:3]
        raise DataError(f"the sources mix raw and simplified drawings (raw: {raw}); pass --simplify "
                        "to simplify the raw ones, or prepare them separately")
    kind = kinds.pop() if kinds else "simplified"

    # Class list: given, or every word read, in Kaggle order (trimmed to present classes below).
    words = list(opts["classes"]) if opts["classes"] is not None else \
        sort_words(w for s in summaries for w in s["words"])
    vocab = Vocabulary(words)
    word_maps = [np.array([vocab.index(w) for w in s["words"]] + [-1], np.int32) for s in summaries]

    ns = np.array([s["n"] for s in summaries], np.int64)
    keys = np.concatenate([np.zeros(0, np.int64)] + [_read_all(s, "key", np.int64) for s in summaries])
    labels = np.concatenate([np.zeros(0, np.int32)]
                            + [m[_read_all(s, "word", np.int32)] for s, m in zip(summaries, word_maps)])
    first_row = np.concatenate([[0], np.cumsum(ns)])

    # Duplicate key_ids across all files: the first in file order is kept.
    keep = np.ones(len(keys), bool)
    order = np.argsort(keys, kind="stable")
    dup = np.zeros(len(keys), bool)
    if len(keys) > 1:
        dup[order[1:][keys[order[1:]] == keys[order[:-1]]]] = True
    if dup.any():
        rows = np.flatnonzero(dup)
        file_of = np.searchsorted(first_row, rows, side="right") - 1  # the file of each duplicate
        if opts["on_bad"] == "error":
            r = int(rows[0])
            f = int(file_of[0])
            line = int(_read_all(summaries[f], "line", np.int64)[r - int(first_row[f])])
            raise DataError(bad_input_message(summaries[f]["path"], line, "duplicate_key_id"))
        for f in np.unique(file_of):
            rf = rows[file_of == f]
            line = int(_read_all(summaries[f], "line", np.int64)[int(rf[0] - first_row[f])])
            stats.add("duplicate_key_id", summaries[f]["path"], line, len(rf))
        keep &= ~dup
    del order, dup

    if opts["max_per_class"] is not None:
        kept = np.flatnonzero(keep & (labels >= 0))
        lab = labels[kept]
        by = np.argsort(lab, kind="stable")
        sl = lab[by]
        start = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
        rank = np.empty(len(kept), np.int64)
        rank[by] = np.arange(len(kept)) - np.repeat(start, np.diff(np.r_[start, len(kept)]))
        over = kept[rank >= opts["max_per_class"]]
        filtered["over_max_per_class"] += len(over)
        keep[over] = False

    if opts["classes"] is None:  # classes with no drawing left are dropped
        present = np.unique(labels[keep & (labels >= 0)])
        remap = np.full(len(vocab) + 1, -1, np.int32)
        remap[present] = np.arange(len(present))
        labels = np.where(labels >= 0, remap[labels], -1)
        vocab = Vocabulary([vocab.words[k] for k in present])
    if len(vocab) > MAX_CLASSES:
        raise DataError(f"{len(vocab)} classes: a store holds at most {MAX_CLASSES}")

    # Sizes of the kept data.
    n_total = int(keep.sum())
    s_total = 0
    p_total = 0
    for k, summ in enumerate(summaries):
        row = int(first_row[k])
        for rec in summ["records"]:
            a = _read_record(summ, rec, ["nstr", "npts"])
            kk = keep[row:row + rec["n"]]
            row += rec["n"]
            s_total += int(a["nstr"][kk].sum())
            p_total += int(a["npts"][kk].sum())
    has_time = kind == "raw" and all(s["has_time"] for s in summaries if s["n"])
    pdtype = np.uint8 if kind == "simplified" else np.float32

    with _staging(out) as stage:
        w = {
            "points": _NpyWriter(stage / "points.npy", pdtype, (p_total, 2)),
            "stroke_ptr": _NpyWriter(stage / "stroke_ptr.npy", np.int64, (s_total + 1,)),
            "drawing_ptr": _NpyWriter(stage / "drawing_ptr.npy", np.int64, (n_total + 1,)),
            "labels": _NpyWriter(stage / "labels.npy", np.int16, (n_total,)),
            "key_ids": _NpyWriter(stage / "key_ids.npy", np.int64, (n_total,)),
            "countries": _NpyWriter(stage / "countries.npy", "S2", (n_total,)),
            "recognized": _NpyWriter(stage / "recognized.npy", np.bool_, (n_total,)),
            "timestamps": _NpyWriter(stage / "timestamps.npy", np.int64, (n_total,)),
        }
        if has_time:
            w["time"] = _NpyWriter(stage / "time.npy", np.float32, (p_total,))
        w["stroke_ptr"].write(np.zeros(1, np.int64))
        w["drawing_ptr"].write(np.zeros(1, np.int64))
        s_off = 0
        p_off = 0
        sources = []
        recognized = []
        bar = progress(total=n_total, desc="write", unit="drawing")
        names = ["pts", "slen", "nstr", "npts", "rec", "ts", "cc"] + (["time"] if has_time else [])
        try:
            for k, summ in enumerate(summaries):
                row = int(first_row[k])
                n_kept = 0
                for rec in summ["records"]:  # one parsed chunk at a time: memory stays bounded
                    kk = keep[row:row + rec["n"]]
                    sl = slice(row, row + rec["n"])
                    row += rec["n"]
                    if not kk.any():
                        continue
                    a = _read_record(summ, rec, names)
                    keep_s = np.repeat(kk, a["nstr"])
                    keep_p = np.repeat(kk, a["npts"])
                    slen = a["slen"][keep_s]
                    w["points"].write(a["pts"][keep_p])
                    if has_time:
                        w["time"].write(a["time"][keep_p])
                    w["stroke_ptr"].write(p_off + np.cumsum(slen))
                    w["drawing_ptr"].write(s_off + np.cumsum(a["nstr"][kk]))
                    w["labels"].write(labels[sl][kk].astype(np.int16))
                    w["key_ids"].write(keys[sl][kk])
                    w["countries"].write(a["cc"][kk])
                    recognized.append(a["rec"][kk])
                    w["recognized"].write(recognized[-1])
                    w["timestamps"].write(a["ts"][kk])
                    s_off += int(slen.size)
                    p_off += int(slen.sum())
                    n_kept += int(kk.sum())
                    bar.update(int(kk.sum()))
                sources.append({"path": summ["path"], "format": summ["format"], "kind": summ["kind"],
                                "drawings": n_kept, "skipped": summ["skipped"]})
        finally:
            bar.close()
            for wr in w.values():
                wr.close()
        meta = _base_meta(kind, "quickdraw", vocab.words, labels[keep],
                          np.concatenate([np.zeros(0, bool)] + recognized),
                          num_strokes=s_total, num_points=p_total, has_time=has_time) | {
            "skipped": stats.as_dict(), "skipped_total": stats.total(),
            "skipped_examples": stats.examples, "filtered": dict(sorted(filtered.items())),
            "sources": sources,
            "options": {k: opts[k] for k in ("simplify", "recognized_only", "max_per_class", "on_bad")}
            | {"classes_given": opts["classes"] is not None},
        }
        _write_classes_meta(stage, vocab.words, meta)
    return StrokeStore.open(out)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


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
