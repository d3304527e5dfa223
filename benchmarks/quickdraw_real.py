"""Quick, Draw! on real drawings under a fixed CPU-time budget: nnlab's recipe vs the Kaggle notebook.

Data: ../shared/data/quickdraw/simplified (344 words x 25 drawings, Google's first drawings of
each file), prepared into a stroke store in a temporary folder and split by key_id hash
(the same split as `nnlab run` uses): about 20 training drawings per class, a few-shot problem.

Both pipelines get the same training budget of CPU seconds (default 600, `--budget-s`), the same
split and seed, one torch thread each, and run one after the other in this process; rendering
happens in the training process and counts against the budget. The budget is process CPU time,
so other jobs on a shared machine stretch the wall time but not the work either pipeline gets
(on an idle machine the two are the same). Then each model is scored on
the validation split by MAP@3 keyed by key_id.

- reference: the Kaggle "Quick, Draw!" MobileNet notebook's pipeline: `draw_cv2` (cv2.line, 6 px,
  colour 255 - min(stroke, 10) * 13, on a 256x256 canvas, then cv2.resize to 64x64), Keras'
  `preprocess_input` (x / 127.5 - 1), Keras' MobileNet v1 (alpha 1, from scratch, written here
  in torch with Keras' padding and initialisation), Adam (lr 0.002), cross-entropy, trained until
  the budget is spent. Its batch is 64 like ours: the notebook's 680 (`--ref-batch-size 680`)
  buys only ~60 steps in 10 CPU minutes and scores at chance, which would flatter us.
- ours: an nnlab `strokes` config (printed in the output) trained with nnlab's own parts, as
  `nnlab run` does: the packed store, StrokeDataset (the numba renderer straight at the target
  size, stroke augmentation), endless shuffled batches, a timm backbone from `build_model`,
  AdamW from `build_optimizer`, label smoothing, the cosine schedule (over the fraction of the
  budget spent, since the step count is whatever the budget buys), scored through
  `to_model_input` as `nnlab predict` does. The model scored is the last step's.

    python benchmarks/quickdraw_real.py [--budget-s 600] [--seed 0]

Ends with `RESULT quickdraw_map3_ours`, `RESULT quickdraw_map3_reference` and
`RESULT quickdraw_map3_gain <ours - reference>`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
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
    "data": {"kind": "strokes", "image_size": 64, "encoding": "time-decay", "augment": True,
             "batch_size": 64, "eval_batch_size": 512, "val_fraction": VAL_FRACTION, "test_fraction": 0.0,
             "num_workers": 0},
    "model": {"name": "timm:mobilenetv3_small_050", "dropout": 0.2},
    "loss": {"label_smoothing": 0.1},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05},
    "schedule": {"name": "cosine", "warmup_epochs": 0.3},
    "train": {"epochs": 6, "threads": 1},  # warm-up: 0.3 of 6 "epochs" = the first 5% of the budget
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
    # Keras' epsilon 1e-3; but torch's momentum 0.1 (Keras 0.9), not Keras' 0.99: after the few
    # hundred steps a short budget buys, running statistics averaged that slowly are still far
    # from the trained network's and the reference would score at chance in eval mode (an
    # artefact of the budget, not of the notebook, which trains for 12,800 steps).
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.1)


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


def train_for(budget_s: float, batches, model: nn.Module, opt: torch.optim.Optimizer, loss_fn, name: str,
              log, schedule=None) -> dict:
    """Optimiser steps on `batches` (an endless iterator of (x, y), made as it is consumed, so
    drawing the images counts) until `budget_s` CPU seconds of this process are spent.
    `schedule(fraction of the budget spent)` may set the learning rate before each step."""
    start, wall = time.process_time(), time.perf_counter()
    steps = seen = 0
    model.train()
    for x, y in batches:
        frac = (time.process_time() - start) / budget_s
        if frac >= 1:
            break
        if schedule is not None:
            schedule(frac)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        seen += len(y)
        if steps % 100 == 0:
            log(f"  {name} step {steps}: loss {loss.item():.3f}, {time.process_time() - start:.0f} CPU s")
    return {"steps": steps, "images": seen, "cpu_s": time.process_time() - start,
            "wall_s": time.perf_counter() - wall}


def train_reference(store, train_idx, labels: np.ndarray, budget_s: float, seed: int, size: int, batch_size: int,
                    log) -> tuple[nn.Module, dict]:
    """Adam 0.002 and cross-entropy on shuffled batches until `budget_s` CPU seconds are spent."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = KerasMobileNet(len(store.classes))
    opt = torch.optim.Adam(model.parameters(), lr=0.002, eps=1e-7)  # Keras' Adam epsilon
    labels = torch.from_numpy(labels)

    def batches():
        while True:  # a new permutation each epoch (a short last batch is skipped)
            order = rng.permutation(train_idx)
            for pos in range(0, len(order) - batch_size + 1, batch_size):
                idx = np.sort(order[pos:pos + batch_size])
                yield reference_images(store, idx, size), labels[idx]

    info = train_for(budget_s, batches(), model, opt, nn.functional.cross_entropy, "reference", log)
    return model, info


@torch.no_grad()
def reference_proba(model: nn.Module, store, idx: np.ndarray, size: int, batch: int = 256) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(reference_images(store, idx[a:a + batch], size)), 1).numpy()
           for a in range(0, len(idx), batch)]
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Ours: nnlab's data, augmentation, renderer, model and optimiser builders, on the same budget
# --------------------------------------------------------------------------------------------


def ours_config(seed: int, store_path: Path, overrides: list[str] = ()):
    from nnlab.config import apply_override, validate

    raw = json.loads(json.dumps(OURS)) | {"seed": seed}
    raw["data"]["path"] = str(store_path)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, "benchmark")


def cosine_factor(frac: float, warmup: float) -> float:
    """nnlab's cosine schedule with linear warm-up, over the fraction of the budget spent
    (the step count is unknown in advance: it is whatever the budget buys)."""
    if frac < warmup:
        return (frac + 1e-3) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


def train_ours(cfg, budget_s: float, log) -> tuple[nn.Module, dict]:
    """What `nnlab run` does for a `strokes` config (build_stroke_data's endless shuffled training
    loader with StrokeAugment, build_model, build_optimizer, label smoothing, cosine), until
    `budget_s` CPU seconds are spent."""
    from nnlab.datasets.strokes import build_stroke_data
    from nnlab.device import seed_everything
    from nnlab.models import build_model
    from nnlab.training.optim import build_optimizer

    seed_everything(cfg.seed)
    data = build_stroke_data(cfg)
    loader = data.loaders["train"]
    model = build_model(cfg.model, data.in_chans, len(data.classes), data.image_size)
    opt = build_optimizer(cfg, model)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    warmup = cfg.schedule.warmup_epochs / max(cfg.train.epochs, 1)

    def batches():
        for epoch in itertools.count():
            loader.sampler.set_epoch(epoch)
            for x, y, _ in loader:
                yield x, y

    def schedule(frac: float) -> None:
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr * cosine_factor(frac, warmup)

    return model, train_for(budget_s, batches(), model, opt, crit, "ours", log, schedule)


@torch.no_grad()
def ours_proba(model: nn.Module, cfg, store, idx: np.ndarray, batch: int = 256) -> np.ndarray:
    """Validation probabilities with `to_model_input`, the preprocessing `nnlab predict` uses."""
    from nnlab.datasets.strokes import to_model_input

    d = cfg.data
    model.eval()
    out = [torch.softmax(model(to_model_input(store.batch(idx[a:a + batch]), d.image_size, d.encoding,
                                              d.line_width, padding=d.padding)), 1).numpy()
           for a in range(0, len(idx), batch)]
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=float, default=600.0, help="CPU seconds of training per pipeline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="folder of simplified ndjson files")
    ap.add_argument("--ref-size", type=int, default=64, help="the reference's image side (notebook: 64)")
    ap.add_argument("--ref-batch-size", type=int, default=64, help="the reference's batch (notebook: 680)")
    ap.add_argument("--only", choices=["ours", "reference"], help="run one pipeline (for tuning)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override our config (for tuning), e.g. --set data.image_size=64")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (the real Quick, Draw! sample lives in ../shared/data)")

    from nnlab.metrics import classification_report
    from nnlab.store.prepare import prepare

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
            cfg = ours_config(args.seed, tmp / "store", args.overrides)
            shown = cfg.model_dump(mode="json", exclude_none=True, include={"data", "model", "loss", "optim"})
            shown["data"] = {k: v for k, v in shown["data"].items() if k in OURS["data"]}
            log("ours: " + json.dumps(shown))
            model, info = train_ours(cfg, args.budget_s, log)
            results["ours"] = score(ours_proba(model, cfg, store, val_idx)) | info
            log("ours: " + json.dumps(results["ours"], default=float))
        if args.only in (None, "reference"):
            log(f"reference: draw_cv2 256 -> {args.ref_size}, Keras MobileNet v1 (alpha 1), Adam 0.002, "
                f"batch {args.ref_batch_size}")
            model, info = train_reference(store, train_idx, labels, args.budget_s, args.seed, args.ref_size,
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
