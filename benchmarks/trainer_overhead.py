"""Images/s of nnlab's training loop vs a bare hand-written PyTorch loop: same model, data, batch size.

Both are timed over the same span, the batches of an epoch (data, forward, backward, step), in
process CPU time: on a shared machine wall time measures the neighbours, CPU time the work.
Ours runs through `nnlab.training.fit` (DataLoader, sampler, NaN guard, schedule, metrics);
the bare loop slices pre-made tensors. Each round runs both sides back to back (the order
alternating) and gives one paired ratio; the RESULT is their median, with the interquartile range
(benchmarks/paired.py). Rounds of a few seconds a side keep one scheduler hiccup from deciding one.

    python benchmarks/trainer_overhead.py [--epochs 8] [--rounds 7]
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

from nnlab.config import validate
from nnlab.datasets.images import make_transform
from nnlab.ingest.image_kinds import load_source
from nnlab.models import build_model
from nnlab.training import fit

BITMAPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "quickdraw" / "bitmap28"


def config(epochs: int, batch: int) -> dict:
    data = {"kind": "bitmap", "path": str(BITMAPS)} if BITMAPS.is_dir() else {"kind": "digits"}
    size = 28 if BITMAPS.is_dir() else 8
    return {"name": "overhead", "seed": 0,
            "data": data | {"image_size": size, "batch_size": batch, "val_fraction": 0.0, "test_fraction": 0.1},
            "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 1e-3},
            "train": {"epochs": epochs, "keep_best": 0}}


def ours(raw: dict) -> float:
    """nnlab's loop, timed around each call of its epoch function."""
    import nnlab.training.loop as train

    spent, seen = [0.0], [0]
    real = train.train_one_epoch

    def timed(*args, **kwargs):
        start = time.process_time()
        stats = real(*args, **kwargs)
        spent[0] += time.process_time() - start
        seen[0] += round(stats["images_per_second"] * stats["seconds"])
        return stats

    train.train_one_epoch = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fit(validate(raw), out=Path(tmp) / "run")
    finally:
        train.train_one_epoch = real
    return seen[0] / spent[0]


def bare(raw: dict) -> float:
    """The loop a user would write by hand over in-memory tensors."""
    cfg = validate(raw)
    torch.manual_seed(0)
    source = load_source(cfg.data.kind, **({"path": cfg.data.path} if cfg.data.path else {}))
    transform = make_transform(False, cfg.data.image_size, 1, False)
    x = transform.batch(source.images)
    y = torch.as_tensor(source.labels)
    n = int(len(x) * (1 - cfg.data.test_fraction))
    x, y = x[:n], y[:n]
    model = build_model(cfg.model, 1, len(source.classes), cfg.data.image_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    seen, elapsed = 0, 0.0
    for _ in range(cfg.train.epochs):
        start = time.process_time()
        order = torch.randperm(n)
        for i in range(0, n, cfg.data.batch_size):
            idx = order[i:i + cfg.data.batch_size]
            loss = criterion(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(idx)
        elapsed += time.process_time() - start
    return seen / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs per side and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = config(args.epochs, args.batch)
    print(f"data {raw['data']['kind']}, model lenet_alpha, batch {args.batch}, {args.epochs} epochs x "
          f"{args.rounds} rounds, {args.threads} threads; ours / bare images/s of CPU time", file=sys.stderr)
    print_ratio("trainer_overhead_ratio", paired_ratios(lambda: ours(raw), lambda: bare(raw), args.rounds))


if __name__ == "__main__":
    main()
