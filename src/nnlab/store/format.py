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
splits.npy          (N,) int8                  optional: the split the source gave (0 train, 1 val,
                                               2 test, -1 none: by key_id hash), e.g. sketch-rnn's
classes.txt         one word per line          words with spaces, in class order
meta.json           object                     format version, kind, counts, skips, sources
==================  =========================  ==============================================

A store is opened by `StrokeStore.open` (memory-mapped), built in memory by
`StrokeStore.from_drawings`, or written by `nnlab.store.prepare.prepare`.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.fileio import read_classes, umask_mode, write_classes
from nnlab.ingest.reasons import MISSING_TIMESTAMP
from nnlab.ingest.sketchrnn import SPLIT_CODES
from nnlab.ingest.writers import format_timestamps, parse_timestamps
from nnlab.store.splits import key_id_split
from nnlab.strokes.drawing import Drawing, StrokeBatch, gather
from nnlab.strokes.vocabulary import Vocabulary, label_to_word

FORMAT = "nnlab-strokes"
VERSION = 1
MAX_CLASSES = np.iinfo(np.int16).max

# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class StrokeStore:
    """Drawings packed flat (see the module doc), memory-mapped from disk or held in memory."""

    def __init__(self, *, points: np.ndarray, stroke_ptr: np.ndarray, drawing_ptr: np.ndarray,
                 labels: np.ndarray, key_ids: np.ndarray, countries: np.ndarray,
                 recognized: np.ndarray, classes: Sequence[str], meta: dict,
                 time: np.ndarray | None = None, timestamps: np.ndarray | None = None,
                 splits: np.ndarray | None = None, path: Path | None = None):
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
        self.splits = splits  # explicit split codes (SPLIT_CODES), or None: all by key_id hash
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
        classes = read_classes(path / "classes.txt")

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
                    splits=load("splits", required=False), classes=classes, meta=meta, path=path)
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
            (self.splits is None or (len(self.splits) == n and self.splits.dtype == np.int8),
             "splits must be (N,) int8"),
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

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the store layout to a directory: absent or empty, or a store to replace with `overwrite`."""
        path = Path(path)
        with _staging(path, overwrite) as tmp:
            for name in ("points", "stroke_ptr", "drawing_ptr", "labels", "key_ids", "countries",
                         "recognized", "timestamps"):
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
            for name in ("time", "splits"):
                if getattr(self, name) is not None:
                    np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
            _write_classes_meta(tmp, self.classes, self.meta)
        self.path = path

    # ---- access ---------------------------------------------------------------------------

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

    def batch(self, indices: Sequence[int] | np.ndarray) -> StrokeBatch:
        """Drawings `indices` packed as a StrokeBatch (points in the store's dtype, time kept),
        gathered with array indexing only."""
        return gather(self.points, self.stroke_ptr, self.drawing_ptr, self.time, indices)

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
                close = difflib.get_close_matches(label_to_word(w), self.classes, n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise DataError(f"no class {w!r} in this store ({len(self.classes)} classes){hint}")
            wanted.append(k)
        return np.flatnonzero(np.isin(np.asarray(self.labels), np.array(wanted, np.int16)))

    def split(self, val_fraction: float = 0.1, test_fraction: float = 0.0,
              salt: str = "nnlab") -> dict[str, np.ndarray]:
        """train/val/test indices by a hash of key_id: a drawing's split never changes when
        drawings are added or removed. A drawing whose source gave its split (`splits.npy`, e.g.
        sketch-rnn's train/valid/test) keeps that one, whatever the fractions."""
        by_hash = key_id_split(np.asarray(self.key_ids), val_fraction, test_fraction, salt=salt)
        if self.splits is None:
            return by_hash
        codes = np.asarray(self.splits)
        return {name: np.union1d(np.flatnonzero(codes == SPLIT_CODES[name]), idx[codes[idx] < 0])
                for name, idx in by_hash.items()}

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
    write_classes(folder / "classes.txt", classes)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                      encoding="utf-8")


def check_target(path: Path, overwrite: bool = False) -> None:
    """Refuse to write a store at `path` unless it is absent, an empty directory, or (with
    `overwrite`) a stroke store nnlab wrote: replacing a store deletes the directory."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if not p.is_dir() or p.is_symlink():
        raise DataError(f"{p}: exists and is not a directory; choose another --out")
    if not any(p.iterdir()):
        return
    meta = p / "meta.json"
    try:
        fmt = json.loads(meta.read_text(encoding="utf-8")).get("format") if meta.is_file() else None
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        raise DataError(f"{p}: exists and is not a stroke store; choose another --out or an empty directory "
                        "(nothing was changed)")
    if not overwrite:
        raise DataError(f"{p}: a stroke store exists there; pass --overwrite to replace it, or choose another --out")


class _staging:
    """Build a directory next to `path`, then swap it in (replacing an older store only, and
    only with `overwrite`; see `check_target`)."""

    def __init__(self, path: Path, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite

    def __enter__(self) -> Path:
        p = self.path
        check_target(p, self.overwrite)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.partial-", dir=p.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            check_target(self.path, self.overwrite)  # again: something may have appeared there meanwhile
            os.chmod(self.tmp, umask_mode(directory=True))
            if self.path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
                os.replace(self.path, old / "store")  # the old store leaves in one rename, then goes
                os.replace(self.tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.tmp, self.path)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
