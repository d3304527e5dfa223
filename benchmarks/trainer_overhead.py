"""Images/s of nnlab's training loop vs a bare hand-written PyTorch loop: same model, data, batch size.

Both are timed over the same span, the batches of an epoch (data, forward, backward, step), in
process CPU time: on a shared machine wall time measures the neighbours, CPU time the work.
Ours runs through `nnlab.training.fit` (DataLoader, sampler, NaN guard, schedule, metrics);
the bare loop slices pre-made tensors. Rounds alternate; the best of each side counts.

    python benchmarks/trainer_overhead.py [--epochs 4] [--rounds 3]
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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = config(args.epochs, args.batch)
    print(f"data {raw['data']['kind']}, model lenet_alpha, batch {args.batch}, {args.epochs} epochs x "
          f"{args.rounds} rounds, {args.threads} threads", file=sys.stderr)
    results = {"ours": [], "bare": []}
    for r in range(args.rounds):
        for name, fn in (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare)):
            results[name].append(fn(raw))
            print(f"round {r + 1}: {name:<4} {results[name][-1]:,.0f} images/s", file=sys.stderr)
    best_ours, best_bare = max(results["ours"]), max(results["bare"])
    print(f"ours {best_ours:,.0f} images/s, bare {best_bare:,.0f} images/s of CPU time (best of {args.rounds})")
    print(f"RESULT trainer_overhead_ratio {best_ours / best_bare:.3f}")


if __name__ == "__main__":
    main()
