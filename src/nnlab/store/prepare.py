"""`prepare`: files of any format `nnlab.ingest` reads -> one stroke store.

The files are parsed in parallel (one process per file) into temporary per-file spills on disk,
then the store is written with plain streaming writes, a block of drawings at a time, so that
memory does not grow with the number of drawings beyond a few bytes per drawing (key_ids and
labels for the duplicate and per-class checks). The output does not depend on the number of
workers.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.fileio import disk_full_guard
from nnlab.ingest.chunks import ParsedChunk, iter_chunks
from nnlab.ingest.reasons import SkipStats, bad_input_message, check_on_bad
from nnlab.ingest.sketchrnn import SPLIT_CODES
from nnlab.ingest.sources import CHUNK_BYTES, detect_format, find_sources
from nnlab.ingest.writers import write_bin, write_csv, write_ndjson
from nnlab.progress import progress
from nnlab.store.format import MAX_CLASSES, StrokeStore, _base_meta, _staging, _write_classes_meta, check_target
from nnlab.strokes.drawing import Drawing
from nnlab.strokes.simplify import simplify_packed
from nnlab.strokes.vocabulary import Vocabulary, sort_words


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
                  "ts": c.timestamps, "cc": c.countries, "word": word_codes, "line": c.lines,
                  "split": c.splits if c.splits is not None else np.full(len(c), -1, np.int8)}
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
               ("line", np.int64, n), ("split", np.int8, n)]
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
            chunk_bytes: int = CHUNK_BYTES, overwrite: bool = False, allow_empty: bool = False) -> StrokeStore:
    """Build a store at `out` from files or folders of Quick, Draw! data (any supported format).

    simplify: apply Google's simplification to raw drawings (simplified ones pass unchanged);
    without it, raw and simplified files cannot be mixed. recognized_only: drop drawings the
    game did not recognize. max_per_class: keep the first N drawings of each class (file order).
    on_bad: "skip" counts bad rows by reason in meta.json, "error" stops at the first, naming
    file, line and reason. workers: processes parsing files in parallel (default: CPUs, at
    most one per file). classes: a class list (or a classes.txt path) fixing the vocabulary and
    its order; other words are bad rows. `out` must be absent or empty, or a store to replace
    with `overwrite`. A store of no drawing is an error unless `allow_empty`. Returns the opened store."""
    check_on_bad(on_bad)
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"max_per_class must be >= 1, got {max_per_class}")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = find_sources(sources)
    if isinstance(classes, (str, os.PathLike)):
        classes = Vocabulary.load(classes).words
    out = Path(out)
    check_target(out, overwrite)  # before any work; checked again when the store is swapped in
    opts = {"simplify": simplify, "recognized_only": recognized_only, "max_per_class": max_per_class,
            "on_bad": on_bad, "classes": list(classes) if classes is not None else None,
            "chunk_bytes": chunk_bytes, "overwrite": overwrite, "allow_empty": allow_empty}
    workers = max(1, min(workers or os.cpu_count() or 1, len(files)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.spill-", dir=out.parent))
    kept = "nothing was written (temporary files removed)" + (", the store there is as it was" if out.exists() else "")
    try:
        with disk_full_guard(out, kept=kept):
            jobs = [(str(f), str(tmp_root / f"{k:06d}.spill"), opts) for k, f in enumerate(files)]
            summaries = _run_jobs(jobs, workers)
            store = _merge(summaries, out, opts)
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


def _merge(summaries: list[dict], out: Path, opts: dict) -> StrokeStore:
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

    keep = ~_duplicates(keys, first_row, summaries, opts["on_bad"], stats)
    if opts["max_per_class"] is not None:
        over = _over_class_cap(labels, keep, opts["max_per_class"])
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
    if not keep.any() and not opts["allow_empty"]:
        raise DataError(_empty_message(summaries, stats, filtered))
    with _staging(out, opts["overwrite"]) as stage:
        layout = _StoreLayout(kind, summaries, first_row, keep)
        sources, recognized = _write_arrays(stage, layout, labels, keys)
        meta = _base_meta(kind, "quickdraw", vocab.words, labels[keep], recognized, num_strokes=layout.strokes,
                          num_points=layout.points, has_time=layout.has_time) | {
            "skipped": stats.as_dict(), "skipped_total": stats.total(),
            "skipped_examples": stats.examples, "filtered": dict(sorted(filtered.items())),
            "sources": sources,
            "options": {k: opts[k] for k in ("simplify", "recognized_only", "max_per_class", "on_bad")}
            | {"classes_given": opts["classes"] is not None},
        }
        if layout.has_splits:  # the drawings of each split the files gave (sketch-rnn's train/valid/test)
            codes = np.load(stage / "splits.npy")
            meta["split_counts"] = {name: int((codes == c).sum()) for name, c in SPLIT_CODES.items()}
        _write_classes_meta(stage, vocab.words, meta)
    return StrokeStore.open(out)


def _empty_message(summaries: list[dict], stats: SkipStats, filtered: Counter) -> str:
    """Why prepare found no drawing to keep, in one line."""
    files = ", ".join(Path(s["path"]).name for s in summaries[:3]) + (" ..." if len(summaries) > 3 else "")
    why = [f"{k} {v:,}" for k, v in stats.as_dict().items()] + [f"{k} {v:,}" for k, v in filtered.items() if v]
    return (f"no drawing to write from {len(summaries)} file(s) ({files})"
            + (f": skipped {', '.join(why)}" if why else ": they hold no rows")
            + "; pass --allow-empty to write an empty store anyway")


def _duplicates(keys: np.ndarray, first_row: np.ndarray, summaries: list[dict], on_bad: str,
                stats: SkipStats) -> np.ndarray:
    """True for every drawing whose key_id an earlier one (in file order) already has; counted in `stats`."""
    order = np.argsort(keys, kind="stable")
    dup = np.zeros(len(keys), bool)
    if len(keys) > 1:
        dup[order[1:][keys[order[1:]] == keys[order[:-1]]]] = True
    if not dup.any():
        return dup
    rows = np.flatnonzero(dup)
    file_of = np.searchsorted(first_row, rows, side="right") - 1  # the file of each duplicate
    if on_bad == "error":
        r, f = int(rows[0]), int(file_of[0])
        line = int(_read_all(summaries[f], "line", np.int64)[r - int(first_row[f])])
        raise DataError(bad_input_message(summaries[f]["path"], line, "duplicate_key_id"))
    for f in np.unique(file_of):
        rf = rows[file_of == f]
        line = int(_read_all(summaries[f], "line", np.int64)[int(rf[0] - first_row[f])])
        stats.add("duplicate_key_id", summaries[f]["path"], line, len(rf))
    return dup


def _over_class_cap(labels: np.ndarray, keep: np.ndarray, cap: int) -> np.ndarray:
    """Rows of the kept labelled drawings beyond the first `cap` of their class (in file order)."""
    kept = np.flatnonzero(keep & (labels >= 0))
    lab = labels[kept]
    by = np.argsort(lab, kind="stable")
    sl = lab[by]
    start = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
    rank = np.empty(len(kept), np.int64)
    rank[by] = np.arange(len(kept)) - np.repeat(start, np.diff(np.r_[start, len(kept)]))
    return kept[rank >= cap]


class _StoreLayout:
    """What is kept of each spill record, and the kept totals (the final arrays' shapes)."""

    def __init__(self, kind: str, summaries: list[dict], first_row: np.ndarray, keep: np.ndarray):
        self.kind, self.summaries, self.first_row, self.keep = kind, summaries, first_row, keep
        self.drawings = int(keep.sum())
        self.strokes = 0
        self.points = 0
        for summ, rec, kk, _rows in self.records():
            a = _read_record(summ, rec, ["nstr", "npts"])
            self.strokes += int(a["nstr"][kk].sum())
            self.points += int(a["npts"][kk].sum())
        self.has_time = kind == "raw" and all(s["has_time"] for s in summaries if s["n"])
        # the split files give (sketch-rnn's), kept as the store's when any kept drawing has one
        self.has_splits = any((_read_record(summ, rec, ["split"])["split"][kk] >= 0).any()
                              for summ, rec, kk, _rows in self.records())

    def records(self):
        """(summary, record, keep mask, row slice) of every spill record, in file order."""
        for k, summ in enumerate(self.summaries):
            row = int(self.first_row[k])
            for rec in summ["records"]:
                yield summ, rec, self.keep[row:row + rec["n"]], slice(row, row + rec["n"])
                row += rec["n"]


def _write_arrays(stage: Path, layout: _StoreLayout, labels: np.ndarray, keys: np.ndarray) -> tuple[list, np.ndarray]:
    """Stream the kept drawings into the store's .npy files, one spill record at a time (memory stays
    bounded); returns the per-source summary and the kept `recognized` flags."""
    n, s_total, p_total = layout.drawings, layout.strokes, layout.points
    pdtype = np.uint8 if layout.kind == "simplified" else np.float32
    w = {
        "points": _NpyWriter(stage / "points.npy", pdtype, (p_total, 2)),
        "stroke_ptr": _NpyWriter(stage / "stroke_ptr.npy", np.int64, (s_total + 1,)),
        "drawing_ptr": _NpyWriter(stage / "drawing_ptr.npy", np.int64, (n + 1,)),
        "labels": _NpyWriter(stage / "labels.npy", np.int16, (n,)),
        "key_ids": _NpyWriter(stage / "key_ids.npy", np.int64, (n,)),
        "countries": _NpyWriter(stage / "countries.npy", "S2", (n,)),
        "recognized": _NpyWriter(stage / "recognized.npy", np.bool_, (n,)),
        "timestamps": _NpyWriter(stage / "timestamps.npy", np.int64, (n,)),
    }
    if layout.has_time:
        w["time"] = _NpyWriter(stage / "time.npy", np.float32, (p_total,))
    if layout.has_splits:
        w["splits"] = _NpyWriter(stage / "splits.npy", np.int8, (n,))
    w["stroke_ptr"].write(np.zeros(1, np.int64))
    w["drawing_ptr"].write(np.zeros(1, np.int64))
    s_off = p_off = 0
    per_source: Counter = Counter()
    recognized = []
    bar = progress(total=n, desc="write", unit="drawing")
    names = ["pts", "slen", "nstr", "npts", "rec", "ts", "cc"] + (["time"] if layout.has_time else []) \
        + (["split"] if layout.has_splits else [])
    try:
        for summ, rec, kk, sl in layout.records():
            if not kk.any():
                continue
            a = _read_record(summ, rec, names)
            keep_s = np.repeat(kk, a["nstr"])
            keep_p = np.repeat(kk, a["npts"])
            slen = a["slen"][keep_s]
            w["points"].write(a["pts"][keep_p])
            if layout.has_time:
                w["time"].write(a["time"][keep_p])
            w["stroke_ptr"].write(p_off + np.cumsum(slen))
            w["drawing_ptr"].write(s_off + np.cumsum(a["nstr"][kk]))
            w["labels"].write(labels[sl][kk].astype(np.int16))
            w["key_ids"].write(keys[sl][kk])
            w["countries"].write(a["cc"][kk])
            recognized.append(a["rec"][kk])
            w["recognized"].write(recognized[-1])
            w["timestamps"].write(a["ts"][kk])
            if layout.has_splits:
                w["splits"].write(a["split"][kk])
            s_off += int(slen.size)
            p_off += int(slen.sum())
            per_source[summ["path"]] += int(kk.sum())
            bar.update(int(kk.sum()))
    finally:
        bar.close()
        for wr in w.values():
            wr.close()
    sources = [{"path": s["path"], "format": s["format"], "kind": s["kind"], "drawings": per_source[s["path"]],
                "skipped": s["skipped"]} for s in layout.summaries]
    return sources, np.concatenate([np.zeros(0, bool)] + recognized)
