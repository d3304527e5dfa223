"""Ingest speed: a Kaggle-format CSV parsed into stroke arrays, nnlab vs the notebooks' way.

The reference is what the Kaggle notebooks do: ``pandas.read_csv(chunksize=...)`` and
``json.loads`` on every row's drawing, here followed by packing the strokes into the same flat
arrays nnlab produces (points, stroke lengths, key_ids), so both sides end with the same data
(checked). nnlab's reader scans each block of the file once with numba. Each side runs in its
own subprocess so that its peak memory (VmHWM) is its own; both stream (nothing kept but
checksums). The peak includes the imports (nnlab's package imports torch), so the growth over
the resident size after imports, the parser's working set, is printed too.

The CSV is built in a temporary folder by repeating the 8,600 shared simplified drawings
(``../shared/data/quickdraw/simplified``) with fresh key_ids.

    .venv/bin/python benchmarks/ingest.py [--rows 206400] [--rounds 5]

Each round runs one pass of each side back to back (the order alternating, a fresh subprocess each)
and gives one paired ratio; the speedups are the median of those ratios, with the interquartile
range (benchmarks/paired.py). Rates are the median over the rounds, memory that of the largest peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import peak_rss_mib, status_mib  # benchmarks/memory.py
from paired import paired_ratios, print_ratio

ROOT = Path(__file__).resolve().parents[1]
SIMPLIFIED = ROOT.parent / "shared" / "data" / "quickdraw" / "simplified"


def build_csv(path: Path, rows: int) -> int:
    from nnlab.ingest.chunks import read_drawings
    from nnlab.ingest.sources import find_sources
    from nnlab.ingest.writers import KAGGLE_TRAIN_COLUMNS, csv_row

    base = [d for f in find_sources([SIMPLIFIED]) for d in read_drawings(f)]
    parts = []
    for d in base:  # the row split around its key_id, so that copies get fresh ones
        line = csv_row(d)
        head, tail = line.split(f'",{d.key_id},', 1)
        parts.append((head + '",', "," + tail + "\n", d.key_id))
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(KAGGLE_TRAIN_COLUMNS) + "\n")
        rep = 0
        while n < rows:
            for head, tail, key in parts[:rows - n]:
                f.write(f"{head}{key + rep * 10**16}{tail}")
            n += min(len(parts), rows - n)
            rep += 1
    return n


def run_nnlab(csv_path: Path) -> dict:
    from nnlab.ingest.chunks import iter_chunks

    # warm-up on a tiny file: loads the compiled scanners (numba cache) outside the timing
    tiny = csv_path.with_name("tiny.csv")
    with open(csv_path, encoding="utf-8") as src, open(tiny, "w", encoding="utf-8") as dst:
        dst.write(src.readline() + src.readline())
    list(iter_chunks(tiny))
    t = time.perf_counter()
    c = time.process_time()
    n = points = 0
    checksum = 0
    for chunk in iter_chunks(csv_path):
        n += len(chunk)
        points += len(chunk.points)
        checksum += int(chunk.points.sum(dtype=np.int64)) + int((chunk.key_ids % 1000003).sum())
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c, "drawings": n,
            "points": points, "checksum": checksum}


def run_pandas(csv_path: Path, chunksize: int = 20000) -> dict:
    import pandas as pd

    t = time.perf_counter()
    c = time.process_time()
    n = points = 0
    checksum = 0
    for df in pd.read_csv(csv_path, chunksize=chunksize):
        xs, ys, lens = [], [], []
        for text in df["drawing"].values:
            for stroke in json.loads(text):
                xs.extend(stroke[0])
                ys.extend(stroke[1])
                lens.append(len(stroke[0]))
        pts = np.column_stack([np.array(xs, np.float64), np.array(ys, np.float64)])
        stroke_len = np.array(lens, np.int64)  # noqa: F841  (the same arrays as nnlab's)
        keys = df["key_id"].to_numpy(np.int64)
        words = df["word"].to_numpy()  # noqa: F841
        n += len(df)
        points += len(pts)
        checksum += int(pts.sum(dtype=np.int64) if pts.size else 0) + int((keys % 1000003).sum())
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c, "drawings": n,
            "points": points, "checksum": checksum}


def worker(which: str, csv_path: Path) -> None:
    if which == "nnlab":
        import nnlab.ingest.chunks  # noqa: F401  (imports outside the measured working set)
    else:
        import pandas  # noqa: F401
    base = status_mib("VmRSS") or 0.0
    out = run_nnlab(csv_path) if which == "nnlab" else run_pandas(csv_path)
    out["peak_rss_mb"] = peak_rss_mib()
    out["base_rss_mb"] = base
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=206_400)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of one pass per side")
    ap.add_argument("--worker", choices=["nnlab", "pandas"])
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.csv)
        return
    if not SIMPLIFIED.is_dir():
        sys.exit(f"needs {SIMPLIFIED} (the shared Quick, Draw! sample)")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "train_big.csv"
        rows = build_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 2**20
        print(f"CSV: {rows:,} drawings, {size_mb:.0f} MB ({csv_path.name}, Kaggle train_simplified columns)")
        passes: dict[str, list[dict]] = {"pandas": [], "nnlab": []}

        def one_pass(which: str, figure: str) -> float:
            proc = subprocess.run([sys.executable, __file__, "--worker", which, "--csv", str(csv_path)],
                                  capture_output=True, text=True, check=True)
            passes[which].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            return passes[which][-1][figure]

        wall = paired_ratios(lambda: one_pass("pandas", "seconds"), lambda: one_pass("nnlab", "seconds"),
                             args.rounds, label="wall seconds, pandas / nnlab, ")
    cpu = [a["cpu_seconds"] / b["cpu_seconds"] for a, b in zip(passes["pandas"], passes["nnlab"], strict=True)]
    for a, b in zip(passes["pandas"], passes["nnlab"], strict=True):
        if (a["drawings"], a["points"], a["checksum"]) != (b["drawings"], b["points"], b["checksum"]):
            sys.exit(f"the two parsers disagree: pandas {a}, nnlab {b}")
    a, b = (typical(passes[which]) for which in ("pandas", "nnlab"))
    for name, r in (("pandas+json.loads", a), ("nnlab", b)):
        print(f"{name:<18} {r['drawings'] / r['seconds']:>10,.0f} drawings/s  {r['seconds']:6.2f} s "
              f"(cpu {r['cpu_seconds']:5.2f} s)  "
              f"peak RSS {r['peak_rss_mb']:5.0f} MB (after imports {r['base_rss_mb']:4.0f} MB, "
              f"parsing +{r['peak_rss_mb'] - r['base_rss_mb']:.0f} MB)")
    print(f"RESULT ingest_drawings_per_s {b['drawings'] / b['seconds']:.0f}")
    print(f"RESULT ingest_reference_drawings_per_s {a['drawings'] / a['seconds']:.0f}")
    print(f"RESULT ingest_peak_rss_mb {b['peak_rss_mb']:.0f}")
    print(f"RESULT ingest_parse_rss_mb {b['peak_rss_mb'] - b['base_rss_mb']:.0f}")
    print(f"RESULT ingest_reference_peak_rss_mb {a['peak_rss_mb']:.0f}")
    print(f"RESULT ingest_reference_parse_rss_mb {a['peak_rss_mb'] - a['base_rss_mb']:.0f}")
    print_ratio("ingest_cpu_speedup", cpu, digits=2)
    print_ratio("ingest_speedup", wall, digits=2)


def typical(passes: list[dict]) -> dict:
    """One side's passes as one: the median times, the memory of its pass with the largest peak."""
    def median(key: str) -> float:
        return float(np.median([r[key] for r in passes]))
    return max(passes, key=lambda r: r["peak_rss_mb"]) | {"seconds": median("seconds"),
                                                           "cpu_seconds": median("cpu_seconds")}

if __name__ == "__main__":
    main()
