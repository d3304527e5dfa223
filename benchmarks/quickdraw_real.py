"""Quick, Draw! on real drawings under a fixed CPU-time budget: nnlab's recipe vs the Kaggle notebook.

Data: ../shared/data/quickdraw/simplified (344 words x 25 drawings, Google's first drawings of
each file), prepared into a stroke store in a temporary folder and split by key_id hash
(the same split as `nnlab run` uses): about 20 training drawings per class, a few-shot problem.

Both pipelines get the same training budget of CPU seconds (default 600, `--budget-s`), the same
split and seed, one torch thread each, and run one after the other in this process; rendering
happens in the training process and counts against the budget. Then each model is scored on
the validation split by MAP@3 keyed by key_id.

- reference: the Kaggle "Quick, Draw!" MobileNet notebook's pipeline: `draw_cv2` (cv2.line, 6 px,
  colour 255 - min(stroke, 10) * 13, on a 256x256 canvas, then cv2.resize to 64x64), Keras'
  `preprocess_input` (x / 127.5 - 1), Keras' MobileNet v1 (alpha 1, from scratch, written here
  in torch with Keras' padding, BatchNorm and initialisation), Adam (lr 0.002), cross-entropy,
  the notebook's batch of 680 (`--ref-batch-size`), training until the budget is spent.
- ours: `nnlab.train.fit` on a config (shown in the output): the numba renderer straight at the
  target size, stroke augmentation, a timm backbone, label smoothing, AdamW with a cosine
  schedule; its number of steps is set from a measured throughput so that the whole `fit`
  (training, its per-epoch validation and checkpoints) fits the budget. The model scored is the
  last epoch's (no checkpoint picked on the validation split).

    python benchmarks/quickdraw_real.py [--budget-s 600] [--seed 0]

Ends with `RESULT quickdraw_map3_ours`, `RESULT quickdraw_map3_reference` and
`RESULT quickdraw_map3_gain <ours - reference>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "quickdraw" / "simplified"
VAL_FRACTION = 0.2

OURS = {
    "name": "quickdraw-real-ours",
    "data": {"kind": "strokes", "image_size": 48, "encoding": "time-decay", "augment": True,
             "batch_size": 64, "eval_batch_size": 512, "val_fraction": VAL_FRACTION, "test_fraction": 0.0,
             "num_workers": 0},
    "model": {"name": "timm:mobilenetv3_large_100", "dropout": 0.2},
    "loss": {"label_smoothing": 0.1},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05},
    "schedule": {"name": "cosine", "warmup_epochs": 0.3},
    "train": {"epochs": 6, "threads": 1, "keep_best": 0},
    "eval": {"main_metric": "map3"},
}


# --------------------------------------------------------------------------------------------
# The reference: the notebook's rasteriser and Keras' MobileNet v1 in torch
# --------------------------------------------------------------------------------------------


def draw_cv2(strokes: list[np.ndarray], size: int = 64, lw: int = 6, time_color: bool = True) -> np.ndarray:
    """The notebook's `draw_cv2`: lines on a 256x256 canvas, stroke t in 255 - min(t, 10) * 13, resized."""
    img = np.zeros((256, 256), np.uint8)
    for t, stroke in enumerate(strokes):
        color = 255 - min(t, 10) * 13 if time_color else 255
        for i in range(len(stroke) - 1):
            cv2.line(img, (int(stroke[i, 0]), int(stroke[i, 1])), (int(stroke[i + 1, 0]), int(stroke[i + 1, 1])),
                     color, lw)
    return cv2.resize(img, (size, size)) if size != 256 else img


def reference_images(store, idx: np.ndarray, size: int) -> torch.Tensor:
    """The notebook's batch: draw_cv2 per drawing, then Keras' preprocess_input (x / 127.5 - 1)."""
    imgs = np.stack([draw_cv2(d.strokes, size) for d in store.iter_drawings(idx)])
    return torch.from_numpy(imgs).float().div_(127.5).sub_(1.0).unsqueeze(1)


class _SamePadStride2(nn.Module):
    """Keras pads ((0, 1), (0, 1)) before a 'valid' stride-2 convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (0, 1, 0, 1))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # Keras: epsilon 1e-3, momentum 0.99


class KerasMobileNet(nn.Module):
    """`keras.applications.MobileNet(alpha=1.0, weights=None, classes=N)` for 1-channel input:
    conv 3x3/2 (32), 13 depthwise-separable blocks, global average pooling, dropout 1e-3,
    a 1x1 convolution to the classes. ReLU6 everywhere, Glorot-uniform kernels as Keras."""

    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
              (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, num_classes: int, in_chans: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [_SamePadStride2(), nn.Conv2d(in_chans, 32, 3, 2, 0, bias=False), _bn(32), nn.ReLU6()]
        c = 32
        for out, stride in self.BLOCKS:
            if stride == 2:
                layers += [_SamePadStride2(), nn.Conv2d(c, c, 3, 2, 0, groups=c, bias=False)]
            else:
                layers += [nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)]
            layers += [_bn(c), nn.ReLU6(), nn.Conv2d(c, out, 1, bias=False), _bn(out), nn.ReLU6()]
            c = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(1e-3)
        self.head = nn.Conv2d(c, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3), keepdim=True)
        return self.head(self.dropout(x)).flatten(1)


def train_reference(store, train_idx, budget_s: float, seed: int, size: int, batch_size: int,
                    log) -> tuple[nn.Module, dict]:
    """Adam 0.002 and cross-entropy on shuffled batches until `budget_s` CPU seconds are spent."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = KerasMobileNet(len(store.classes))
    opt = torch.optim.Adam(model.parameters(), lr=0.002, eps=1e-7)  # Keras' Adam epsilon
    labels = torch.from_numpy(np.asarray(store.labels).astype(np.int64))
    start, wall = time.process_time(), time.perf_counter()
    steps, seen, order, pos = 0, 0, rng.permutation(train_idx), 0
    model.train()
    while time.process_time() - start < budget_s:
        if pos + batch_size > len(order):  # Keras-style epochs: reshuffle, drop nothing important
            order, pos = rng.permutation(train_idx), 0
        idx = np.sort(order[pos:pos + batch_size])
        pos += batch_size
        x = reference_images(store, idx, size)
        loss = nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        seen += len(idx)
        if steps % 10 == 0:
            log(f"  reference step {steps}: loss {loss.item():.3f}, {time.process_time() - start:.0f} CPU s")
    return model, {"steps": steps, "images": seen, "cpu_s": time.process_time() - start,
                   "wall_s": time.perf_counter() - wall}


@torch.no_grad()
def reference_proba(model: nn.Module, store, idx: np.ndarray, size: int, batch: int = 256) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(reference_images(store, idx[a:a + batch], size)), 1).numpy()
           for a in range(0, len(idx), batch)]
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Ours: nnlab's trainer, with steps set from a measured throughput
# --------------------------------------------------------------------------------------------


def measure_step_cpu(cfg, store, train_idx, steps: int = 6) -> float:
    """CPU seconds per training step of `cfg` (render + augmentation + forward/backward/step)."""
    from nnlab.augment import StrokeAugment
    from nnlab.data.stroke_dataset import StrokeDataset
    from nnlab.models import build_model
    from nnlab.train import build_optimizer

    d = cfg.data
    ds = StrokeDataset(store, train_idx, size=d.image_size, encoding=d.encoding, line_width=d.line_width,
                       padding=d.padding, augment=StrokeAugment() if d.augment else None)
    model = build_model(cfg.model, ds.channels, len(store.classes), d.image_size)
    opt = build_optimizer(cfg, model)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    rng = np.random.default_rng(0)
    for i in range(steps + 2):
        if i == 2:
            t = time.process_time()
        x, y, _ = ds[(rng.choice(len(ds), d.batch_size, replace=False), i)]
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t) / steps


def train_ours(store_path: Path, store, train_idx, val_idx, budget_s: float, seed: int, out: Path,
               log, overrides: list[str] = ()) -> tuple[np.ndarray, dict]:
    from nnlab.config import apply_override, validate
    from nnlab.predict import load_trained
    from nnlab.quickdraw import StrokeSource, predict_drawings
    from nnlab.runs import Run
    from nnlab.train import fit

    raw = json.loads(json.dumps(OURS)) | {"seed": seed}
    raw["data"]["path"] = str(store_path)
    for item in overrides:
        apply_override(raw, item)
    cfg = validate(raw, "benchmark")
    log("ours: " + json.dumps({k: v for k, v in raw.items() if k not in ("name", "seed")}))
    per_step = measure_step_cpu(cfg, store, train_idx)
    # an epoch's validation costs about a third of training on as many images
    epochs = cfg.train.epochs
    val_cost = epochs * len(val_idx) / cfg.data.batch_size * per_step / 3
    steps = max(1, int((budget_s * 0.97 - val_cost - 5) / per_step / epochs))
    log(f"  ours: {per_step * 1000:.0f} CPU ms per step of {cfg.data.batch_size}; {epochs} epochs x {steps} steps")
    raw["train"]["steps_per_epoch"] = steps
    cfg = validate(raw, "benchmark")
    start, wall = time.process_time(), time.perf_counter()
    run = fit(cfg, out=out)
    cpu = time.process_time() - start
    wall = time.perf_counter() - wall
    run = Run.open(run.path)
    last = run.checkpoints / "last.pt"
    model = load_trained(run)
    model.load_state_dict(torch.load(last, map_location="cpu", weights_only=True)["model"])
    source = StrokeSource(lambda a, b: store.batch(val_idx[a:b]), len(val_idx))
    probs = predict_drawings(run, source, model=model, device="cpu")
    return probs, {"steps": epochs * steps, "images": epochs * steps * cfg.data.batch_size, "cpu_s": cpu,
                   "wall_s": wall}


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=float, default=600.0, help="CPU seconds of training per pipeline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="folder of simplified ndjson files")
    ap.add_argument("--ref-size", type=int, default=64, help="the reference's image side (notebook: 64)")
    ap.add_argument("--ref-batch-size", type=int, default=680, help="the reference's batch (notebook: 680)")
    ap.add_argument("--only", choices=["ours", "reference"], help="run one pipeline (for tuning)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override our config (for tuning), e.g. --set data.image_size=64")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (the real Quick, Draw! sample lives in ../shared/data)")

    from nnlab.data.store import prepare
    from nnlab.metrics import classification_report

    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="quickdraw-real-") as tmp:
        tmp = Path(tmp)
        store = prepare([args.data], tmp / "store", workers=1)
        splits = store.split(VAL_FRACTION, 0.0)
        train_idx, val_idx = splits["train"], splits["val"]
        labels = np.asarray(store.labels).astype(np.int64)
        keys = np.asarray(store.key_ids)
        log(f"data: {len(store)} drawings, {len(store.classes)} classes; split by key_id: "
            f"{len(train_idx)} train, {len(val_idx)} val; budget {args.budget_s:.0f} CPU s per pipeline, 1 thread")

        def score(probs: np.ndarray) -> dict:
            r = classification_report(labels[val_idx], probs, ids=keys[val_idx], k=3)
            return {k: r[k] for k in ("map3", "accuracy", "top3_accuracy")}

        results = {}
        if args.only in (None, "ours"):
            probs, info = train_ours(tmp / "store", store, train_idx, val_idx, args.budget_s, args.seed,
                                     tmp / "run", log, args.overrides)
            results["ours"] = score(probs) | info
            log("ours: " + json.dumps(results["ours"], default=float))
        if args.only in (None, "reference"):
            log(f"reference: draw_cv2 256 -> {args.ref_size}, Keras MobileNet v1 (alpha 1), Adam 0.002, "
                f"batch {args.ref_batch_size}")
            model, info = train_reference(store, train_idx, args.budget_s, args.seed, args.ref_size,
                                          args.ref_batch_size, log)
            results["reference"] = score(reference_proba(model, store, val_idx, args.ref_size)) | info
            log("reference: " + json.dumps(results["reference"], default=float))

    for name, r in results.items():
        log(f"{name:<10} val MAP@3 {r['map3']:.4f}  top-1 {r['accuracy']:.4f}  top-3 {r['top3_accuracy']:.4f}  "
            f"({r['steps']} steps, {r['images']} images, {r['cpu_s']:.0f} CPU s, {r['wall_s']:.0f} s wall)")
    for name, r in results.items():
        print(f"RESULT quickdraw_map3_{name} {r['map3']:.4f}")
    if len(results) == 2:
        print(f"RESULT quickdraw_map3_gain {results['ours']['map3'] - results['reference']['map3']:.4f}")


if __name__ == "__main__":
    main()
