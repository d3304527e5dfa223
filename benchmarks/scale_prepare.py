"""`nnlab data prepare` at Kaggle scale: N drawings in Kaggle's train_simplified/<word>.csv layout.

The CSVs are made from the shared drawings (../shared/data/quickdraw/simplified, 25 per class),
repeated with fresh key_ids, in a temporary folder that is removed at the end. Then:
  - `nnlab data prepare` with its default workers, in a subprocess: time, drawings/s, and the peak
    RSS of its whole process tree (the sum over the parent and its workers, sampled every 50 ms;
    also without file-backed pages, which are the store's own page cache), against the speed of
    just reading the CSV bytes (the reference: no parser can beat it);
  - the store's size on disk against the CSVs';
  - random batches of 512 drawings from the memory-mapped store, with a cold page cache (the store's
    pages dropped with posix_fadvise) and a warm one.

    python benchmarks/scale_prepare.py [--drawings 10000000] [--tmp DIR] [--keep]
    python benchmarks/scale_prepare.py --drawings 50000000 --tmp /big/disk   # Kaggle's full size
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from nnlab.ingest.writers import KAGGLE_TRAIN_COLUMNS, csv_row
from nnlab.progress import progress
from nnlab.store.format import StrokeStore
from nnlab.store.prepare import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "quickdraw" / "simplified"
SENTINEL = 999_999_999_999_999_999  # the key_id in a template row, replaced by a fresh one per row
FIRST_KEY = 4_000_000_000_000_000  # fresh key_ids count up from here: 16 digits, like Google's
BATCH = 512
GIB = 2**30


def templates(source: Path, work: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Per word, the (before, after) text around the key_id of each shared drawing's Kaggle CSV row."""
    seed_store = prepare(source, work / "seed-store", workers=1)
    out: dict[str, tuple[list[str], list[str]]] = {}
    for word in seed_store.classes:
        pre, post = [], []
        for d in seed_store.iter_drawings(seed_store.indices_of(word)):
            d.key_id = SENTINEL
            a, b = csv_row(d).split(str(SENTINEL))
            pre.append(a)
            post.append(b + "\n")
        out[word] = (pre, post)
    shutil.rmtree(work / "seed-store")
    return out


def estimate_bytes(rows: dict[str, tuple[list[str], list[str]]], n: int) -> tuple[float, float]:
    """(CSV bytes, store bytes) expected for n drawings, from the templates' mean row length."""
    lengths = [len(a) + 19 + len(b) for pre, post in rows.values() for a, b in zip(pre, post)]
    csv_bytes = float(np.mean(lengths)) * n
    return csv_bytes, 0.6 * csv_bytes  # the store is ~0.3x the CSV text (2 bytes a point); 2x margin


def write_csvs(rows: dict[str, tuple[list[str], list[str]]], n: int, folder: Path, chunk: int = 100_000) -> int:
    """Kaggle layout: folder/<word>.csv with n drawings in all, spread evenly over the words."""
    folder.mkdir(parents=True)
    words = sorted(rows)
    per_word = [n // len(words) + (k < n % len(words)) for k in range(len(words))]
    key, header = FIRST_KEY, ",".join(KAGGLE_TRAIN_COLUMNS) + "\n"
    bar = progress(total=n, desc="write CSVs", unit="drawing")
    for word, count in zip(words, per_word):
        pre, post = rows[word]
        t = len(pre)
        with open(folder / f"{word}.csv", "w", encoding="utf-8", newline="") as f:
            f.write(header)
            for lo in range(0, count, chunk):
                hi = min(lo + chunk, count)
                f.write("".join([f"{pre[i % t]}{key + i}{post[i % t]}" for i in range(lo, hi)]))
                bar.update(hi - lo)
        key += count
    bar.close()
    return n


def read_speed(folder: Path) -> tuple[float, int]:
    """(bytes/s, bytes) of reading every file under `folder` once, 8 MiB at a time (for the CSVs: the
    floor of any prepare)."""
    total, start = 0, time.perf_counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb", buffering=0) as f:
            while block := f.read(8 << 20):
                total += len(block)
    return total / (time.perf_counter() - start), total


def tree_memory(proc: psutil.Process) -> tuple[float, float]:
    """(RSS, RSS without file-backed pages) summed over a process and all its descendants, in bytes."""
    rss = private = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            m = p.memory_info()
        except psutil.Error:  # a worker that just ended
            continue
        rss += m.rss
        private += m.rss - getattr(m, "shared", 0)
    return rss, private


def run_prepare(csv_dir: Path, store: Path) -> tuple[float, float, float]:
    """`nnlab data prepare` in a subprocess (default workers): (seconds, peak tree RSS, peak private), bytes."""
    env = os.environ | {"NNLAB_PROGRESS": "0"}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "nnlab", "data", "prepare", str(csv_dir), "--out", str(store)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watched = psutil.Process(child.pid)
    peak_rss = peak_private = 0.0
    while child.poll() is None:
        try:
            rss, private = tree_memory(watched)
        except psutil.NoSuchProcess:
            break
        peak_rss, peak_private = max(peak_rss, rss), max(peak_private, private)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    output = child.communicate()[0]
    if child.returncode != 0:
        sys.exit(f"scale_prepare: nnlab data prepare failed (exit {child.returncode}):\n{output[-3000:]}")
    print(output.strip(), file=sys.stderr)
    return seconds, peak_rss, peak_private


def drop_cache(folder: Path) -> bool:
    """Ask the kernel to drop the clean cached pages of every file in `folder` (no root needed)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def random_batches(store_path: Path, batches: int, seed: int) -> float:
    """Drawings/s of `batches` random batches of BATCH drawings gathered from a freshly opened store."""
    store = StrokeStore.open(store_path)
    rng = np.random.default_rng(seed)
    start, points = time.perf_counter(), 0
    for _ in range(batches):
        b = store.batch(rng.integers(0, len(store), BATCH))
        points += len(b.points)  # the gathered copy: every point was read
    return batches * BATCH / (time.perf_counter() - start)


def du(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=int, default=10_000_000, help="drawings in all (Kaggle: ~50,000,000)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the CSVs and the store go")
    parser.add_argument("--batches", type=int, default=200, help="random batches of 512 read, cold and warm")
    parser.add_argument("--keep", action="store_true", help="keep the CSVs and the store (their folder is printed)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"scale_prepare: {SHARED} not found (the shared Quick, Draw! drawings)")
    args.tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nnlab-scale-", dir=args.tmp))
    try:
        rows = templates(SHARED, work)
        csv_est, store_est = estimate_bytes(rows, args.drawings)
        need = 1.1 * (csv_est + 2 * store_est)  # the CSVs, prepare's spill files and the store at once
        free = shutil.disk_usage(work).free
        if free < need:
            sys.exit(f"scale_prepare: {args.drawings:,} drawings need about {need / GIB:.1f} GiB free in {args.tmp} "
                     f"(CSVs ~{csv_est / GIB:.1f} GiB, store and spill ~{2 * store_est / GIB:.1f} GiB), "
                     f"but it has {free / GIB:.1f} GiB: pass --tmp DIR on a larger disk or fewer --drawings")
        print(f"{args.drawings:,} drawings, {len(rows)} words, in {work} (~{need / GIB:.1f} GiB of "
              f"{free / GIB:.1f} GiB free)", file=sys.stderr)
        csv_dir = work / "train_simplified"
        start = time.perf_counter()
        write_csvs(rows, args.drawings, csv_dir)
        print(f"wrote the CSVs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        drop_cache(csv_dir)
        read_bps, csv_bytes = read_speed(csv_dir)  # cold: as prepare will read them
        drop_cache(csv_dir)
        store = work / "store"
        seconds, peak_rss, peak_private = run_prepare(csv_dir, store)
        store_bytes, csv_disk = du(store), du(csv_dir)
        n = len(StrokeStore.open(store))
        if n != args.drawings:
            sys.exit(f"scale_prepare: the store holds {n:,} drawings, expected {args.drawings:,}")
        cold_ok = drop_cache(store)
        cold = random_batches(store, args.batches, seed=1)
        read_speed(store)  # warm: every page of the store read once
        warm = random_batches(store, args.batches, seed=2)
        print(f"prepare: {seconds:.1f} s, {args.drawings / seconds:,.0f} drawings/s, {csv_bytes / seconds / 2**20:,.0f} "
              f"MiB/s of CSV vs {read_bps / 2**20:,.0f} MiB/s just reading it; peak tree RSS "
              f"{peak_rss / 2**20:,.0f} MiB ({peak_private / 2**20:,.0f} MiB without file pages); store "
              f"{store_bytes / 2**20:,.0f} MiB vs CSV {csv_disk / 2**20:,.0f} MiB; random batches of {BATCH}: "
              f"{cold:,.0f} drawings/s cold{'' if cold_ok else ' (cache not dropped: no posix_fadvise)'}, "
              f"{warm:,.0f} warm")
        print(f"RESULT scale_prepare_drawings {args.drawings}")
        print(f"RESULT scale_prepare_seconds {seconds:.1f}")
        print(f"RESULT scale_prepare_drawings_per_second {args.drawings / seconds:.0f}")
        print(f"RESULT scale_prepare_vs_csv_read {csv_bytes / seconds / read_bps:.3f}")
        print(f"RESULT scale_prepare_peak_rss_mib {peak_rss / 2**20:.0f}")
        print(f"RESULT scale_prepare_peak_private_mib {peak_private / 2**20:.0f}")
        print(f"RESULT scale_store_mib {store_bytes / 2**20:.0f}")
        print(f"RESULT scale_csv_mib {csv_disk / 2**20:.0f}")
        print(f"RESULT scale_store_vs_csv {store_bytes / csv_disk:.3f}")
        print(f"RESULT scale_batch512_cold_drawings_per_second {cold:.0f}")
        print(f"RESULT scale_batch512_warm_drawings_per_second {warm:.0f}")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
