"""`nnlab predict`: images -> a probability CSV; drawings -> a Kaggle submission (`submission`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nnlab.datasets.kinds import is_drawings, model_input
from nnlab.errors import DataError, NnlabError
from nnlab.evaluation.proba import predict_proba
from nnlab.evaluation.results import write_probabilities
from nnlab.inference.kaggle.ensemble import ensemble_proba
from nnlab.inference.kaggle.submission import predict_submission
from nnlab.ingest.image_files import IMAGE_SUFFIXES, read_image
from nnlab.progress import plural
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained

BATCH_SIZE = 256  # images predicted at a time


def read_image_inputs(path: Path, on_bad: str = "error") -> tuple[list[str], list[np.ndarray | None]]:
    """Ids and uint8 images from an image file, a folder of images (recursive) or an .npz with `images`.

    A file of a folder that cannot be read is None with on_bad = "skip" (its row is kept, marked
    unreadable), a DataError naming it with "error"."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                names, images = z.files, (z["images"] if "images" in z.files else None)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz of images without pickle ({exc})") from None
        if images is None:
            raise DataError(f"{path}: no 'images' array (has: {', '.join(names)})")
        if images.ndim not in (3, 4) or not len(images):
            raise DataError(f"{path}: 'images' has shape {images.shape}; expected (N, H, W[, C]) with N >= 1")
        return [str(i) for i in range(len(images))], list(images)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    ids = [str(f.relative_to(path)) if path.is_dir() else f.name for f in files]
    return ids, [_read_or_none(f, on_bad if path.is_dir() else "error") for f in files]


def _read_or_none(file: Path, on_bad: str) -> np.ndarray | None:
    try:
        return read_image(file)
    except DataError as exc:
        if on_bad == "error":
            raise DataError(f"{exc}; --on-bad skip predicts the other files and marks this one unreadable") from None
        return None


def predict_command(run_dirs: list[Path], input_path: Path, out: Path, top_k: int = 3, tta: str | None = None,
                    weights: str | None = None, balance: bool = False, strict: bool = False,
                    on_bad: str = "skip") -> tuple[int, str | None]:
    """`nnlab predict`: drawings (Kaggle CSV, ndjson, a store) -> Kaggle submission; images -> probability CSV.

    Returns the number of rows written and a warning to show (or None); strict: a bad row or a
    truncated input is an error (drawings)."""
    runs = [Run.open(p) for p in run_dirs]
    if is_drawings(runs[0].config):
        return predict_submission(runs, input_path, out, top_k=top_k, tta=tta, weights=weights, balance=balance,
                                  strict=strict)
    if tta or balance:
        raise NnlabError(f"{'--tta' if tta else '--balance'} is available for drawings only")
    ids, images = read_image_inputs(input_path, on_bad)
    good = [i for i, im in enumerate(images) if im is not None]
    if not good:
        raise DataError(f"{input_path}: none of its {len(images)} images could be read")
    probs = np.full((len(images), len(runs[0].classes())), np.nan, np.float32)  # NaN rows: unreadable
    probs[good] = ensemble_proba(runs, lambda run: predict_images(run, [images[i] for i in good]), weights)
    write_probabilities(out, np.asarray(ids), probs, runs[0].classes(), k=top_k)
    bad = [ids[i] for i, im in enumerate(images) if im is None]
    warning = (f"warning: {plural(len(bad), 'file')} could not be read and {'is' if len(bad) == 1 else 'are'} "
               f"marked unreadable in {out}: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}") if bad else None
    return len(ids), warning


def predict_images(run: Run, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Softmax probabilities (N, classes) of a run's best checkpoint for uint8 images (H, W) or (H, W, C),
    preprocessed exactly as its val/test splits were."""
    x = model_input(images, run.config)
    return predict_proba(load_trained(run), (x[i:i + BATCH_SIZE] for i in range(0, len(x), BATCH_SIZE)))
