"""Training speed of the NumPy engine against the same network in torch, on the CPU.

The reference notebook's network: 784-512-128-64-10, ReLU, BatchNorm1d,
Dropout 0.5, Adam (lr 1e-3), batch 128, float32. Both engines start from the
same weights and see the same batches in the same order, with the same number
of threads for NumPy's BLAS and for torch (intra-op threads and its BLAS).

Data: the shared 1,000-image MNIST subset (../shared/data), repeated to
10,000 images and scaled to [0, 1]; where it is absent, uniform random data of
MNIST's shape (throughput does not depend on the pixel values).

Each engine runs in its own fresh subprocess, so peak memory is measured
cleanly: peak RSS of the process, its growth during training, and for NumPy
also tracemalloc's peak of array allocations during one epoch. Each of
``--rounds`` rounds runs both engines back to back (the order alternating) for
``--epochs`` timed epochs and gives one paired ratio of their median epochs'
images/s; the RESULT is the median of those ratios, with the interquartile range
(benchmarks/paired.py). Usage::

    python benchmarks/scratch_vs_torch.py [--threads 2] [--epochs 3] [--rounds 5]

Prints ``RESULT scratch_vs_torch <numpy images/s / torch images/s>`` and ``..._iqr`` last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from memory import peak_rss_mib, reset_peak_rss  # benchmarks/memory.py
from paired import paired_ratios, print_ratio

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("NNLAB_SHARED_DATA", ROOT.parent / "shared" / "data")) \
    / "digits" / "mnist-mini1000" / "mini-mnist-1000.npz"
HIDDEN, CLASSES, BATCH, LR, DROPOUT, IMAGES, SEED = [512, 128, 64], 10, 128, 1e-3, 0.5, 10_000, 0


def load_data():
    import numpy as np
    if MNIST.is_file():
        with np.load(MNIST, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        reps = -(-IMAGES // len(images))
        X = np.tile(images.reshape(len(images), -1), (reps, 1))[:IMAGES].astype(np.float32) / 255
        y = np.tile(labels, reps)[:IMAGES].astype(np.int64)
        return X, y, f"mini-MNIST (1,000 real images) repeated to {IMAGES:,}"
    rng = np.random.default_rng(SEED)
    return (rng.random((IMAGES, 784), dtype=np.float32), rng.integers(0, CLASSES, IMAGES),
            f"{IMAGES:,} random images of MNIST shape ({MNIST} not found)")


def worker(engine: str, threads: int, epochs: int) -> dict:
    """Train in this process and return throughput and memory figures."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from nnlab.scratch import Adam, build_mlp, fit_epoch, softmax_cross_entropy

    threadpool_limits(threads)  # env vars already set by the parent; this makes sure
    X, y, _ = load_data()
    model = build_mlp(784, HIDDEN, CLASSES, dropout=DROPOUT, seed=SEED)
    rng = np.random.default_rng(SEED)  # the batch order: the same in both engines

    if engine == "numpy":
        opt = Adam(model.params(), lr=LR)

        def epoch(Xe, ye):
            fit_epoch(model, softmax_cross_entropy, opt, Xe, ye, BATCH, rng)
    else:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(threads)
        twin = torch_twin(model)
        topt = torch.optim.Adam(twin.parameters(), lr=LR)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

        def epoch(Xe, ye):
            # the same work as fit_epoch: shuffle, gather, step, track loss and accuracy
            twin.train()
            order = torch.from_numpy(rng.permutation(len(Xe)))
            total, correct = 0.0, 0
            for start in range(0, len(Xe), BATCH):
                idx = order[start:start + BATCH]
                xb, yb = Xt[idx], yt[idx]
                topt.zero_grad(set_to_none=True)
                logits = twin(xb)
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                topt.step()
                total += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yb).sum())

    rss_before = reset_peak_rss()  # after imports, data and model: only training counts
    epoch(X[:20 * BATCH], y[:20 * BATCH])  # warm-up: allocator, BLAS buffers, first-call costs
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        epoch(X, y)
        rates.append(len(X) / (time.perf_counter() - start))
    peak = peak_rss_mib()
    out = {"epoch_images_per_s": rates, "peak_rss_mib": peak, "rss_growth_mib": peak - rss_before}
    if engine == "numpy":  # numpy reports its array allocations to tracemalloc
        import tracemalloc
        tracemalloc.start()
        epoch(X, y)
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def torch_twin(model):
    """The torch network with the NumPy model's architecture and initial weights."""
    import torch
    from torch import nn
    make = {"Dense": lambda s: nn.Linear(s["in_features"], s["out_features"]),
            "ReLU": lambda s: nn.ReLU(), "Dropout": lambda s: nn.Dropout(s["p"]),
            "BatchNorm1d": lambda s: nn.BatchNorm1d(s["num_features"], s["eps"], s["momentum"])}
    twin = nn.Sequential(*[make[s["type"]](s) for s in model.architecture()])
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()},
                         strict=False)
    return twin


def run_worker(engine: str, threads: int, epochs: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)  # read once when numpy / torch load their BLAS
    proc = subprocess.run([sys.executable, __file__, "--worker", engine, "--threads", str(threads),
                           "--epochs", str(epochs)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{engine} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.epochs)))
        return

    results: dict[str, list[dict]] = {"numpy": [], "torch": []}

    def median_rate(engine: str) -> float:
        results[engine].append(run_worker(engine, args.threads, args.epochs))
        return statistics.median(results[engine][-1]["epoch_images_per_s"])

    ratios = paired_ratios(lambda: median_rate("numpy"), lambda: median_rate("torch"), args.rounds)
    print(f"data: {load_data()[2]}; 784-{'-'.join(map(str, HIDDEN))}-{CLASSES}, ReLU, BatchNorm1d, "
          f"Dropout {DROPOUT}, Adam, batch {BATCH}, float32, {args.threads} thread(s), "
          f"{args.epochs} timed epochs x {args.rounds} rounds")
    for engine, runs in results.items():
        rates = [rate for r in runs for rate in r["epoch_images_per_s"]]
        spread = f"median {statistics.median(rates):,.0f}, best {max(rates):,.0f}, worst {min(rates):,.0f}"
        mem = (f"peak RSS while training {max(r['peak_rss_mib'] for r in runs):.0f} MiB, "
               f"{max(r['rss_growth_mib'] for r in runs):.1f} MiB above the RSS before training")
        if "tracemalloc_peak_mib" in runs[0]:
            mem += f", tracemalloc peak {max(r['tracemalloc_peak_mib'] for r in runs):.1f} MiB"
        print(f"{engine:>5}: images/s of its epochs: {spread}; {mem}")
    print_ratio("scratch_vs_torch", ratios)


if __name__ == "__main__":
    main()
