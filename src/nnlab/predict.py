"""Inference with trained runs: load the best checkpoint, predict images, write probability CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnlab.errors import DataError, NnlabError
from nnlab.models import build_model
from nnlab.runs import Run

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_trained(run: Run, device: str = "cpu") -> nn.Module:
    """The run's model with its best checkpoint's weights, in eval mode."""
    cfg = run.config
    classes = run.classes()
    if cfg.engine != "torch":
        raise NnlabError(f"{run.path}: a {cfg.engine} run; load it with nnlab.scratch")
    model = build_model(cfg.model.model_copy(update={"weights": None, "pretrained": False}),
                        cfg.data.channels, len(classes), cfg.data.image_size)
    state = torch.load(run.best_checkpoint(), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict_tensors(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Softmax probabilities for a (N, C, H, W) float tensor, in batches."""
    out = [torch.softmax(model(images[i:i + batch_size].to(device)).float(), 1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def read_image_inputs(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """Ids and uint8 images from an image file, a folder of images (recursive) or an .npz with `images`."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z:
                raise DataError(f"{path}: no 'images' array (has: {', '.join(z.files)})")
            images = z["images"]
        return [str(i) for i in range(len(images))], list(images)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    ids, images = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(np.array(im.convert("RGB") if im.mode not in ("L", "RGB") else im))  # writable, for torch
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: cannot read image ({exc})") from None
        ids.append(str(f.relative_to(path)) if path.is_dir() else f.name)
    return ids, images


def write_probabilities(path: Path, ids: np.ndarray, probs: np.ndarray, classes: list[str],
                        labels: np.ndarray | None = None, k: int = 3) -> Path:
    """CSV: id, [true label], the top-k class names, then one probability column per class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    k = min(k, len(classes))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["id"] + (["label"] if labels is not None else []) + [f"top{i + 1}" for i in range(k)]
        writer.writerow(header + [f"p_{c}" for c in classes])
        for i in range(len(ids)):
            row = [ids[i]] + ([classes[labels[i]]] if labels is not None else [])
            writer.writerow(row + [classes[j] for j in top[i]] + [f"{p:.6g}" for p in probs[i]])
    return path


def ensemble_proba(runs: list[Run], predict_one, weights: str | None) -> np.ndarray:
    """Weighted average of each run's probabilities; every run must share the class list."""
    ws = parse_weights(weights, len(runs))
    classes = runs[0].classes()
    total = None
    for run, w in zip(runs, ws, strict=True):
        if run.classes() != classes:
            raise NnlabError(f"{run.path}: classes differ from {runs[0].path}; an ensemble needs the same classes")
        probs = predict_one(run)
        total = probs * w if total is None else total + probs * w
    return total / sum(ws)


def parse_weights(weights: str | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    try:
        ws = [float(w) for w in weights.split(",")]
    except ValueError:
        raise NnlabError(f"--weights {weights!r}: expected numbers separated by commas") from None
    if len(ws) != n or any(w < 0 for w in ws) or sum(ws) <= 0:
        raise NnlabError(f"--weights {weights!r}: need {n} non-negative weights (one per run) with a positive sum")
    return ws


def predict_command(run_dirs: list[Path], input_path: Path, out: Path, top_k: int = 3, tta: str | None = None,
                    weights: str | None = None) -> tuple[int, str | None]:
    """`nnlab predict`: drawings (Kaggle CSV, ndjson, a store) -> Kaggle submission; images -> probability CSV.

    Returns the number of rows written and a warning to show (or None)."""
    runs = [Run.open(p) for p in run_dirs]
    if runs[0].config.data.kind in ("strokes", "synth"):
        from nnlab.quickdraw import predict_submission

        return predict_submission(runs, input_path, out, top_k=top_k, tta=tta, weights=weights)
    if tta:
        raise NnlabError("--tta is available for drawings only")
    from nnlab.data.images import make_transform

    ids, images = read_image_inputs(input_path)

    def one(run: Run) -> np.ndarray:
        d = run.config.data
        transform = make_transform(train=False, image_size=d.image_size, channels=d.channels, augment=False,
                                   mean=d.mean, std=d.std)
        return predict_tensors(load_trained(run), torch.stack([transform(im) for im in images]))

    probs = ensemble_proba(runs, one, weights)
    write_probabilities(out, np.asarray(ids), probs, runs[0].classes(), k=top_k)
    return len(ids), None


def evaluate_run(run_dir: Path, split: str = "test", data_path: Path | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Metrics of a run's best checkpoint on one split (optionally of other data of the same kind)."""
    from nnlab.config import apply_override, validate
    from nnlab.data import build_data
    from nnlab.train import evaluate_split, pick_device

    run = Run.open(run_dir)
    raw = run.config.model_dump(mode="json", exclude_none=True)
    for item in overrides:
        apply_override(raw, item)
    reuse_splits = data_path is None and not overrides
    if data_path is not None:
        raw["data"]["path"] = str(Path(data_path).resolve())
    cfg = validate(raw, f"{run.path}/config.toml")
    data = build_data(cfg, run.path if reuse_splits else None)
    if split not in data.loaders or not data.has(split):
        raise NnlabError(f"split {split!r} is empty or unknown (have: {', '.join(s for s in data.loaders if data.has(s))})")
    if data.classes != run.classes():
        raise DataError(f"the data's classes differ from the run's classes.txt ({len(data.classes)} vs "
                        f"{len(run.classes())}); cannot evaluate")
    device = pick_device(cfg.train.device)
    metrics, _ = evaluate_split(load_trained(run, device), data, split, device, cfg)
    return {"split": split, "examples": len(data.labels[split])} | metrics
