"""Rendering speed: nnlab.strokes.render against the Kaggle reference `draw_cv2`, one process.

Both draw the same shared simplified Quick, Draw! drawings with the reference's
time-decay colours and 6 px lines (at 256 px), at 64 and 128 px.

- Reference: the notebook's `draw_cv2` as it was written: strokes as parsed from the
  ndjson (Python lists), one `cv2.line` call per segment on a 256x256 canvas, then
  `cv2.resize`; one drawing per call.
- Ours: `render(batch, size, "time-decay")` on packed batches of 512 drawings with uint8
  points, what `StrokeStore.batch` hands out, drawn straight at the target size.

Neither side's input preparation (JSON parsing, packing) is timed, and both drop each
image as soon as it is drawn, as a data loader's consumer would. Times are the CPU time
of this process (`time.process_time`), so that other programs on a shared machine skew
the ratio less. The JIT is warmed up first (and cached on disk); then, per size, --rounds
rounds of passes over the same drawings (at least --min-seconds of CPU time a side), the order
alternating; the RESULT is the median of the rounds' paired ratios, with the interquartile
range (benchmarks/paired.py).

Run: .venv/bin/python benchmarks/render.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
from paired import paired_ratios, print_ratio

from nnlab.strokes.drawing import StrokeBatch
from nnlab.strokes.render import render

DATA = Path(os.environ.get("NNLAB_SHARED_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))
BASE_SIZE = 256


def draw_cv2(raw_strokes, size=256, lw=6, time_color=True):
    """The Kaggle notebook's renderer, verbatim apart from the name of the canvas size."""
    img = np.zeros((BASE_SIZE, BASE_SIZE), np.uint8)
    for t, stroke in enumerate(raw_strokes):
        for i in range(len(stroke[0]) - 1):
            color = 255 - min(t, 10) * 13 if time_color else 255
            _ = cv2.line(img, (stroke[0][i], stroke[1][i]),
                         (stroke[0][i + 1], stroke[1][i + 1]), color, lw)
    if size != BASE_SIZE:
        return cv2.resize(img, (size, size))
    else:
        return img


def load(folder: Path) -> list[list]:
    """The `drawing` field of every line of the folder's ndjson files, as parsed JSON."""
    out = []
    for path in sorted(folder.glob("*.ndjson")):
        with open(path) as f:
            out.extend(json.loads(line)["drawing"] for line in f)
    return out


def pack(raw: list[list], batch_size: int) -> list[StrokeBatch]:
    """The same drawings as the store would hand them out: packed uint8 batches."""
    batches = []
    for k in range(0, len(raw), batch_size):
        strokes = [[np.array(s[:2], dtype=np.uint8).T for s in d] for d in raw[k:k + batch_size]]
        b = StrokeBatch.from_drawings(strokes)
        b.points = b.points.astype(np.uint8)
        batches.append(b)
    return batches


def reference_pass(raw: list[list], size: int) -> None:
    for d in raw:
        draw_cv2(d, size)


def our_pass(batches: list[StrokeBatch], size: int) -> None:
    for b in batches:
        render(b, size=size, encoding="time-decay")


def passes_per_cpu_second(fn, min_seconds: float) -> float:
    """Calls of `fn` per CPU second, calling it again until `min_seconds` of CPU time are spent (a pass
    of ours takes a few hundredths of a second: too short to time alone)."""
    calls, start = 0, time.process_time()
    while (spent := time.process_time() - start) < min_seconds:
        fn()
        calls += 1
    return calls / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "quickdraw" / "simplified")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="CPU seconds per side and round")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    raw = load(args.data)
    n = len(raw)
    batches = pack(raw, args.batch_size)
    render(batches[0], size=64, encoding="time-decay")  # warm the JIT (compiles or loads the cache)
    print(f"{n} drawings from {args.data}; ours in batches of {args.batch_size}; one process, one thread")
    results = {}
    for size in (64, 128):  # ours / reference in passes over the drawings per CPU second
        results[size] = paired_ratios(lambda: passes_per_cpu_second(lambda: our_pass(batches, size), args.min_seconds),
                                      lambda: passes_per_cpu_second(lambda: reference_pass(raw, size), args.min_seconds),
                                      args.rounds, label=f"{size} px ")
    for size, ratios in results.items():  # the RESULT lines last, so scripts can read them
        print_ratio(f"render_speedup_{size}", ratios, digits=2)


if __name__ == "__main__":
    main()
