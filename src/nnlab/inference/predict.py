"""`nnlab predict`: images -> a probability CSV; drawings -> a Kaggle submission (`submission`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnlab.datasets.bundle import STROKE_KINDS
from nnlab.datasets.images import make_transform
from nnlab.errors import DataError, NnlabError
from nnlab.evaluation.proba import predict_proba
from nnlab.evaluation.results import write_probabilities
from nnlab.inference.ensemble import ensemble_proba
from nnlab.inference.submission import predict_submission
from nnlab.ingest.image_files import IMAGE_SUFFIXES, read_image
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained

BATCH_SIZE = 256  # images predicted at a time


def read_image_inputs(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """Ids and uint8 images from an image file, a folder of images (recursive) or an .npz with `images`."""
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
    ids = [str(f.relative_to(path)) if path.is_dir() else f.name for f in files]
    return ids, [read_image(f) for f in files]


def predict_command(run_dirs: list[Path], input_path: Path, out: Path, top_k: int = 3, tta: str | None = None,
                    weights: str | None = None) -> tuple[int, str | None]:
    """`nnlab predict`: drawings (Kaggle CSV, ndjson, a store) -> Kaggle submission; images -> probability CSV.

    Returns the number of rows written and a warning to show (or None)."""
    runs = [Run.open(p) for p in run_dirs]
    if runs[0].config.data.kind in STROKE_KINDS:
        return predict_submission(runs, input_path, out, top_k=top_k, tta=tta, weights=weights)
    if tta:
        raise NnlabError("--tta is available for drawings only")
    ids, images = read_image_inputs(input_path)
    probs = ensemble_proba(runs, lambda run: predict_images(run, images), weights)
    write_probabilities(out, np.asarray(ids), probs, runs[0].classes(), k=top_k)
    return len(ids), None


def predict_images(run: Run, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Softmax probabilities (N, classes) of a run's best checkpoint for uint8 images (H, W) or (H, W, C),
    preprocessed exactly as its val/test splits were."""
    d = run.config.data
    transform = make_transform(train=False, image_size=d.image_size, channels=d.channels, augment=False,
                               mean=d.mean, std=d.std)
    x = torch.stack([transform(im) for im in images])
    return predict_proba(load_trained(run), (x[i:i + BATCH_SIZE] for i in range(0, len(x), BATCH_SIZE)))
