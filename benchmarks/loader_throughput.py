"""Images/s the stroke loader delivers vs images/s the recipe's model consumes, on this machine.

The loader reads a store prepared from the shared drawings (../shared/data/quickdraw/simplified)
and renders, as training does (the recipe's augmentation, batch size and line width), at 64 and
128 px, with a 1-channel (time-decay) and a 3-channel (order-velocity-time) encoding, with 0, 1
and 2 worker processes; the first batch (worker start-up) is not timed. The reference is the
recipe's model (recipes/quickdraw.toml) training on ready-made tensors: forward, backward and
AdamW step, at each size. `loader_vs_model_64` is the 64 px, 1-channel, 1-worker loader over the
model at 64 px: above 1 the model, not the data, sets the pace. It is the median of --rounds rounds
that each time the two back to back (the order alternating), with `loader_vs_model_64_iqr`
(benchmarks/paired.py).

    python benchmarks/loader_throughput.py [--batches 30] [--model-steps 10] [--model-batch 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NNLAB_PROGRESS", "0")

import torch  # noqa: E402
from paired import paired_ratios, print_ratio  # noqa: E402
from torch import nn  # noqa: E402

from nnlab.config import load_config  # noqa: E402
from nnlab.datasets.strokes import StrokeDataset, stroke_loader  # noqa: E402
from nnlab.models import build_model  # noqa: E402
from nnlab.store.format import StrokeStore  # noqa: E402
from nnlab.store.prepare import prepare  # noqa: E402
from nnlab.strokes.augment import StrokeAugment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "quickdraw" / "simplified"
RECIPE = ROOT / "recipes" / "quickdraw.toml"
ENCODINGS = {1: "time-decay", 3: "order-velocity-time"}


def loader_speed(store: StrokeStore, cfg, size: int, channels: int, workers: int, batches: int) -> float:
    """Images/s of the training loader over `batches` batches after the first."""
    d = cfg.data
    ds = StrokeDataset(store, size=size, encoding=ENCODINGS[channels], line_width=d.line_width, padding=d.padding,
                       augment=StrokeAugment() if d.augment else None, seed=0)
    loader = stroke_loader(ds, d.batch_size, train=True, steps_per_epoch=batches + 1, num_workers=workers,
                           prefetch_factor=d.prefetch_factor if workers else None)
    it = iter(loader)
    next(it)  # start-up: worker processes, numba's cached kernels
    start, seen = time.perf_counter(), 0
    for x, _, _ in it:
        seen += len(x)
    return seen / (time.perf_counter() - start)


def model_speed(cfg, size: int, classes: int, batch: int, steps: int) -> float:
    """Images/s of the recipe's model training on ready-made 1-channel batches (forward, backward, step)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, classes, size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    x, y = torch.rand(batch, 1, size, size), torch.randint(0, classes, (batch,))

    def step() -> None:
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: first-call allocations
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="timed loader batches per setting")
    parser.add_argument("--batch", type=int, default=None, help="loader batch size (default: the recipe's)")
    parser.add_argument("--model-steps", type=int, default=10, help="timed training steps of the model per size")
    parser.add_argument("--model-batch", type=int, default=64, help="the model's batch size on this CPU")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds of loader_vs_model")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"loader_throughput: {SHARED} not found (the shared Quick, Draw! drawings)")
    cfg = load_config(RECIPE)
    if args.batch:
        cfg.data.batch_size = args.batch
    print(f"recipe {RECIPE.name}: model {cfg.model.name}, loader batch {cfg.data.batch_size}, augment "
          f"{cfg.data.augment}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        store = prepare(SHARED, Path(tmp) / "store", workers=1)
        results: dict[tuple[int, int, int], float] = {}
        for size in args.sizes:
            for channels in ENCODINGS:
                for workers in args.workers:
                    speed = loader_speed(store, cfg, size, channels, workers, args.batches)
                    results[size, channels, workers] = speed
                    print(f"loader {size:>3} px {channels} ch {workers} workers: {speed:,.0f} images/s", file=sys.stderr)
                    print(f"RESULT loader_images_per_second_{size}px_{channels}ch_{workers}w {speed:.0f}")
        for size in args.sizes:
            speed = model_speed(cfg, size, len(store.classes), args.model_batch, args.model_steps)
            print(f"model {cfg.model.name} {size:>3} px (batch {args.model_batch}): {speed:,.0f} images/s",
                  file=sys.stderr)
            print(f"RESULT model_images_per_second_{size}px {speed:.0f}")
            if (size, 1, 1) in results:
                ratios = paired_ratios(lambda: loader_speed(store, cfg, size, 1, 1, args.batches),
                                       lambda: model_speed(cfg, size, len(store.classes), args.model_batch,
                                                           args.model_steps),
                                       args.rounds, label=f"loader / model {size} px, ")
                print_ratio(f"loader_vs_model_{size}", ratios, digits=2)


if __name__ == "__main__":
    main()
