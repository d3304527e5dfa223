"""CPU training speed before and after the automatic thread choice (`nnlab.device.choose_threads`).

Two configurations, each measured twice back to back in this process:

- `quickdraw`: recipes/quickdraw.toml with the CPU hint its header comment gives (the `--set` options
  after `nnlab run recipes/quickdraw.toml`, read from the file), on a stroke store prepared in a temporary
  folder from ../shared/data/quickdraw/simplified (8,600 real drawings);
- `faces_arcface`: recipes/faces-arcface.toml as written, on ../shared/data/faces/orl.

`before` is the old behaviour: torch's default threads (all the cores torch sees at start-up, here
`train.threads` set to that number) beside the recipe's DataLoader workers; `after` leaves
`train.threads` unset, so the run picks torch threads + workers <= the usable cores. The speed is the
training images per second of steps `--warmup` .. `--steps` of the first epoch (timed by an
`nnlab.Callback`; the warm-up leaves out the workers' start and the first allocations); the run is
then abandoned (no evaluation), so each measurement takes seconds to a minute.

    python benchmarks/cpu_threads.py [--steps 40] [--warmup 5] [--only quickdraw,faces_arcface] [--quick]

prints the thread plan of each measurement and
`RESULT cpu_threads_<recipe>_<before|after>_img_per_s <value>` lines. `--quick` is a smoke run (a few
steps, not a measurement).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402  (after the path: this checkout's nnlab)

import nnlab  # noqa: E402
from nnlab.device import thread_plan  # noqa: E402

STARTUP_THREADS = torch.get_num_threads()  # torch's own default, before nnlab sets anything


def recipe_cpu_hint(recipe: Path) -> list[str]:
    """The `--set KEY=VALUE` options of the `nnlab run <recipe> --set ...` line in the recipe's header
    comment (continued over lines ending in a backslash)."""
    comment = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment).replace("\\ ", " ")
    match = re.search(rf"nnlab run recipes/{re.escape(recipe.name)}((?:\s+--set\s+\S+)+)", text)
    if not match:
        raise SystemExit(f"{recipe}: no `nnlab run {recipe.name} --set ...` CPU hint in its header comment")
    words = shlex.split(match[1])
    return [words[i + 1] for i in range(0, len(words), 2) if words[i] == "--set"]


class Measured(Exception):
    """Raised by the timer once the measured steps are done: the run is abandoned (and removed)."""


class StepTimer(nnlab.Callback):
    """Images per second between step `warmup` and step `steps` of the run."""

    def __init__(self, warmup: int, steps: int, batch_size: int) -> None:
        self.warmup, self.steps, self.batch = warmup, steps, batch_size
        self.start = 0.0
        self.images_per_second = float("nan")

    def on_step_end(self, step: int, loss) -> None:
        if step + 1 == self.warmup:
            self.start = time.perf_counter()
        elif step + 1 == self.steps:
            self.images_per_second = (self.steps - self.warmup) * self.batch / (time.perf_counter() - self.start)
            raise Measured


def measure(name: str, recipe: Path, overrides: list[str], args, out: Path) -> dict[str, float]:
    results = {}
    for when in ("before", "after"):
        sets = overrides + [f"train.steps_per_epoch={args.steps + 1}", "train.epochs=1"]
        if when == "before":
            sets.append(f"train.threads={STARTUP_THREADS}")
        cfg = nnlab.make_config(recipe, sets)
        plan = thread_plan(cfg)
        timer = StepTimer(args.warmup, args.steps, cfg.data.batch_size)
        try:
            nnlab.fit(cfg, out=out / f"{name}-{when}", echo=False, callbacks=[timer])
        except Measured:
            pass
        print(f"{name} {when}: torch threads {plan.torch_threads}, workers {cfg.data.num_workers}, "
              f"{plan.cores} usable cores; steps {args.warmup}..{args.steps} of batch {cfg.data.batch_size}: "
              f"{timer.images_per_second:,.1f} img/s", flush=True)
        results[when] = timer.images_per_second
        print(f"RESULT cpu_threads_{name}_{when}_img_per_s {timer.images_per_second:.1f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps measured up to (default 40)")
    ap.add_argument("--warmup", type=int, default=5, help="steps before the clock starts (default 5)")
    ap.add_argument("--only", default="quickdraw,faces_arcface", help="which measurements, comma-separated")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 steps after 1, small images")
    args = ap.parse_args(argv)
    small = []
    if args.quick:
        args.steps, args.warmup = 3, 1
        small = ["data.image_size=16"]
    only = set(args.only.split(","))
    print(f"torch {torch.__version__}, start-up threads {STARTUP_THREADS}, usable cores "
          f"{thread_plan(nnlab.make_config({'name': 'x'})).cores}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cpu-threads-") as tmp:
        tmp = Path(tmp)
        if "quickdraw" in only:
            from nnlab.store.prepare import prepare

            store = tmp / "store"
            prepare([SHARED / "quickdraw" / "simplified"], store, workers=1)
            recipe = ROOT / "recipes" / "quickdraw.toml"
            hint = [s for s in recipe_cpu_hint(recipe) if not s.startswith("train.steps_per_epoch=")]
            print(f"quickdraw CPU hint: --set {' --set '.join(hint)}", flush=True)
            measure("quickdraw", recipe, hint + [f'data.path="{store}"'] + small, args, tmp)
        if "faces_arcface" in only:
            measure("faces_arcface", ROOT / "recipes" / "faces-arcface.toml",
                    [f'data.path="{SHARED / "faces" / "orl"}"'] + small, args, tmp)


if __name__ == "__main__":
    main()
