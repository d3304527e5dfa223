"""One prepared check for a machine with CUDA (at most ~8 minutes): is the GPU fed, and does it all work?

On a synthetic store (nnlab's doodle generator, written to disk like a prepared one) with the
recipe recipes/quickdraw.toml:
  1. training steps through `nnlab.training.fit` with AMP bf16 and 8, then 16 loader workers:
     images/s, data_wait_fraction and the model's own images/s from history.csv;
  2. the model alone (forward, backward, AdamW step on ready-made batches on the GPU, bf16) with
     channels_last off/on and torch.compile off/on: images/s, and the compile time;
  3. the loader alone with 8 and 16 workers (render, pin, copy to the GPU): images/s, and its
     ratio to the model alone (above 1: the data path is not the bottleneck);
  4. one `torchrun --nproc_per_node 1` run (nccl) of the same recipe;
  5. ONNX export of the model trained in 1 (onnxruntime's parity check included).
Every step prints RESULT lines as it ends; a failing step prints `RESULT <step>_ok 0` and the
rest still run; a step that would start after --budget seconds is skipped.

`--dry-run` runs every step on the CPU at toy sizes (a smaller MobileNetV3, 1 and 2 workers, gloo,
compile with torch.compile's "eager" backend, which traces but generates no code), so a test keeps
it working:

    python benchmarks/gpu_check.py              # on the CUDA machine
    python benchmarks/gpu_check.py --dry-run    # anywhere, about a minute

`--torchrun-run RUN` reads step 4's figures from RUN, a run torchrun has already made (the test suite
passes its own DDP run, so that one torchrun serves both tests), instead of launching another.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NNLAB_PROGRESS", "0")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from nnlab.config import load_config, save_config  # noqa: E402
from nnlab.datasets.strokes import StrokeDataset, stroke_loader  # noqa: E402
from nnlab.device import autocast  # noqa: E402
from nnlab.inference.models.export import export_onnx  # noqa: E402
from nnlab.models import build_model  # noqa: E402
from nnlab.store.format import StrokeStore  # noqa: E402
from nnlab.strokes.augment import StrokeAugment  # noqa: E402
from nnlab.strokes.synth import synth_drawings  # noqa: E402
from nnlab.training import fit  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickdraw.toml"
REAL = {"device": "cuda", "workers": (8, 16), "per_class": 1000, "steps": 150, "model_steps": 30,
        "loader_batches": 60, "image_size": None, "batch": None, "model": None, "backend": "inductor",
        "dist": "nccl", "threads": 4}
# the dry run's model: the recipe's family (timm MobileNetV3), a twentieth of the work
DRY = {"device": "cpu", "workers": (1, 2), "per_class": 20, "steps": 3, "model_steps": 2,
       "loader_batches": 3, "image_size": 32, "batch": 16, "model": "timm:mobilenetv3_small_050",
       "backend": "eager", "dist": "gloo", "threads": 1}


class Check:
    """Runs the steps, printing RESULT lines; remembers failures and the time budget."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.failed: list[str] = []

    def step(self, name: str, fn: Callable[[], dict[str, float]]) -> dict[str, float] | None:
        if time.monotonic() > self.deadline:
            print(f"RESULT {name}_skipped 1", flush=True)
            return None
        start = time.monotonic()
        try:
            results = fn()
        except Exception:  # one broken step must not hide the others' figures
            traceback.print_exc()
            self.failed.append(name)
            print(f"RESULT {name}_ok 0", flush=True)
            return None
        for key, value in results.items():
            print(f"RESULT {key} {value:.4g}", flush=True)
        print(f"{name}: {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        return results


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_store(path: Path, per_class: int) -> StrokeStore:
    StrokeStore.from_drawings(synth_drawings(20, per_class, seed=0)).save(path)
    return StrokeStore.open(path)


def recipe(store: Path, p: dict, workers: int, **extra: object):
    """The recipe with the check's store, device, sizes and `workers`."""
    sets = [f"data.path={store}", f"data.num_workers={workers}", f"train.device={p['device']}",
            f"train.steps_per_epoch={p['steps']}", "train.epochs=1", "train.amp=bf16", "train.keep_best=1",
            "data.val_fraction=0.05"]
    if p["image_size"]:
        sets.append(f"data.image_size={p['image_size']}")
    if p["model"]:
        sets.append(f"model.name={p['model']}")
    if p["batch"]:
        sets += [f"data.batch_size={p['batch']}", f"data.eval_batch_size={p['batch']}"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(RECIPE, sets)


def train_step(cfg, out: Path, tag: str) -> dict[str, float]:
    row = fit(cfg, out=out).history()[-1]
    return {f"train_bf16_{tag}_images_per_second": row["images_per_second"],
            f"train_bf16_{tag}_data_wait_fraction": row["data_wait_fraction"],
            f"train_bf16_{tag}_model_images_per_second": row["model_images_per_second"]}


def model_only(cfg, classes: int, p: dict, channels_last: bool, compiled: bool) -> dict[str, float]:
    """Forward, backward and step of the recipe's model on ready-made batches on the device, bf16."""
    device, d = p["device"], cfg.data
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg.model, d.channels, classes, d.image_size).to(device, memory_format=layout).train()
    if compiled:
        model.compile(backend=p["backend"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    x = torch.rand(d.batch_size, d.channels, d.image_size, d.image_size, device=device).to(memory_format=layout)
    y = torch.randint(0, classes, (d.batch_size,), device=device)

    def step() -> None:
        with autocast(device, "bf16"):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(3):  # warm-up: cuDNN's algorithm search, and the compilation
        step()
    sync(device)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(p["model_steps"]):
        step()
    sync(device)
    tag = f"cl{int(channels_last)}_compile{int(compiled)}"
    out = {f"model_only_{tag}_images_per_second": p["model_steps"] * d.batch_size / (time.perf_counter() - start)}
    return out | ({f"model_only_{tag}_warmup_seconds": warmup} if compiled else {})


def loader_only(cfg, store: StrokeStore, p: dict, workers: int) -> float:
    """Images/s of the training loader with `workers`, pinned and copied to the device."""
    d, device = cfg.data, p["device"]
    ds = StrokeDataset(store, size=d.image_size, encoding=d.encoding, line_width=d.line_width, padding=d.padding,
                       augment=StrokeAugment() if d.augment else None)
    loader = stroke_loader(ds, d.batch_size, train=True, steps_per_epoch=p["loader_batches"] + 1,
                           num_workers=workers, pin_memory=device.startswith("cuda"),
                           prefetch_factor=d.prefetch_factor)
    it = iter(loader)
    next(it)  # worker start-up
    start, seen = time.perf_counter(), 0
    for x, _, _ in it:
        x = x.to(device, non_blocking=True)
        seen += len(x)
    sync(device)
    return seen / (time.perf_counter() - start)


def torchrun_step(cfg, work: Path, p: dict, done: Path | None = None) -> dict[str, float]:
    """One torchrun of `cfg`, or `done`, a run torchrun made before."""
    out = done or work / "torchrun-run"
    if done is None:
        save_config(cfg, work / "torchrun.toml")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "nnlab", "run", str(work / "torchrun.toml"), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=os.environ | {"OMP_NUM_THREADS": str(p["threads"])})
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun exited {proc.returncode}: {proc.stderr[-3000:]}")
    with open(out / "history.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    return {f"torchrun_{p['dist']}_ok": 1, f"torchrun_{p['dist']}_images_per_second": float(row["images_per_second"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy sizes")
    parser.add_argument("--budget", type=float, default=450, help="seconds after which no step starts")
    parser.add_argument("--torchrun-run", type=Path, help="a run torchrun already made: step 4 reads it")
    args = parser.parse_args()
    p = DRY if args.dry_run else REAL
    if p["device"] == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on the GPU machine, or pass --dry-run")
    check = Check(args.budget)
    if args.dry_run:
        torch.set_num_threads(p["threads"])  # a shared CPU: more threads than free cores spin and crawl
    if p["device"] == "cuda":
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} CPUs", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="nnlab-gpu-check-") as tmp:
        work = Path(tmp)
        store = make_store(work / "store", p["per_class"])
        first, second = p["workers"]
        base = recipe(work / "store", p, first)
        trained = work / f"train-{first}w"
        check.step("train_first", lambda: train_step(base, trained, f"{first}w"))
        check.step("train_second", lambda: train_step(recipe(work / "store", p, second), work / f"train-{second}w",
                                                      f"{second}w"))
        model = {}
        for channels_last in (False, True):
            for compiled in (False, True):
                got = check.step(f"model_only_cl{int(channels_last)}_compile{int(compiled)}",
                                 lambda: model_only(base, len(store.classes), p, channels_last, compiled))
                model |= got or {}
        reference = model.get(f"model_only_cl{int(base.train.channels_last)}_compile0_images_per_second")
        for workers in p["workers"]:
            def loader_step(workers=workers) -> dict[str, float]:
                speed = loader_only(base, store, p, workers)
                ratio = {f"loader_vs_model_{workers}w": speed / reference} if reference else {}
                return {f"loader_{workers}w_images_per_second": speed} | ratio
            check.step(f"loader_{workers}w", loader_step)
        check.step("torchrun", lambda: torchrun_step(base, work, p, args.torchrun_run))
        check.step("export", lambda: {"export_ok": 1,
                                      "export_max_abs_diff": export_onnx(trained, work / "export").max_abs_diff})
    if check.failed:
        sys.exit(f"gpu_check: failed steps: {', '.join(check.failed)}")


if __name__ == "__main__":
    main()
