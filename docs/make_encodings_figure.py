"""Draw docs/encodings.png: the same Quick, Draw! drawings in every encoding of nnlab.strokes.render.

Run from the repository root: .venv/bin/python docs/make_encodings_figure.py
(reads ../shared/data/quickdraw/{simplified,raw}; set NNLAB_SHARED_DATA to point elsewhere).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnlab.ingest.chunks import read_drawings
from nnlab.strokes.augment import StrokeAugment
from nnlab.strokes.drawing import Drawing, StrokeBatch
from nnlab.strokes.render import render
from nnlab.strokes.simplify import frame_batch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "quickdraw"
WORDS = ["cat", "bicycle", "house", "snowman", "octopus"]
SIZE = 128


def first_pair(word: str) -> tuple[Drawing, Drawing]:
    """The first recognized drawing of `word` that has both a simplified and a raw version."""
    raw = {d.key_id: d for d in read_drawings(DATA / "raw" / f"{word}.ndjson")}
    for d in read_drawings(DATA / "simplified" / f"{word}.ndjson"):
        if d.key_id in raw and d.recognized:
            return d, raw[d.key_id]
    raise SystemExit(f"no drawing of {word!r} has both a simplified and a raw version in {DATA}")


def main(out: Path = ROOT / "docs" / "encodings.png") -> None:
    if not (DATA / "simplified").is_dir():
        sys.exit(f"{DATA} not found: the figure needs the shared Quick, Draw! samples")
    pairs = [first_pair(w) for w in WORDS]
    simple = StrokeBatch.from_drawings([s for s, _ in pairs])
    # raw drawings keep their timing; framed like Google's simplified ones (0..255)
    timed = frame_batch(StrokeBatch.from_drawings([t for _, t in pairs]), margin=8)
    augmented = StrokeAugment(rotation=15, stroke_dropout=0.15)(simple, np.random.default_rng(3))
    rows = [
        ("binary", render(simple, SIZE, "binary")[:, 0], "gray"),
        ("time-decay", render(simple, SIZE, "time-decay")[:, 0], "gray"),
        ("order-velocity-time\n(raw, as RGB)", render(timed, SIZE, "order-velocity-time"), None),
    ]
    ovt = rows[-1][1]
    rows += [(f"  channel {k}: {name}", ovt[:, k], "gray")
             for k, name in enumerate(["stroke order", "speed", "elapsed time"])]
    ost = render(timed, SIZE, "order-stroke-time")
    rows.append(("order-stroke-time\n(raw, as RGB)", ost, None))
    rows += [(f"  channel {k}: {name}", ost[:, k], "gray") for k, name in ((1, "stroke draw time"),
                                                                          (2, "pause before stroke"))]
    rows.append(("time-decay +\nStrokeAugment", render(augmented, SIZE, "time-decay")[:, 0], "gray"))
    fig, axes = plt.subplots(len(rows), len(WORDS), figsize=(1.6 * len(WORDS) + 1.6, 1.6 * len(rows)))
    for r, (label, images, cmap) in enumerate(rows):
        for c in range(len(WORDS)):
            ax = axes[r, c]
            img = images[c]
            ax.imshow(img.transpose(1, 2, 0) if img.ndim == 3 else img, cmap=cmap, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(WORDS[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle(f"nnlab.strokes.render encodings at {SIZE} px (line width 6 x {SIZE}/256 px)", fontsize=11)
    fig.text(0.5, 0.005, "Drawings: Google Quick, Draw! data set, CC BY 4.0 "
             "(github.com/googlecreativelab/quickdraw-dataset)", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(out, dpi=80)
    print(out)


if __name__ == "__main__":
    main()
