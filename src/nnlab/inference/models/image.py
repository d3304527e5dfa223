"""A trained image model ready to use outside training: an image classifier (top-k classes) or an
embedding model (L2-normalised embeddings for a gallery), on torch or onnxruntime.

    model = load_image_model("runs/faces-arcface-...")   # a run directory (torch, best checkpoint)
    model = load_image_model("export/")                   # `nnlab export` output (onnxruntime)
    model.embed([image, ...])                             # (N, D) unit vectors   (task "embedding")
    model.guess([image, ...], top_k=3)                    # [[("s1", 0.93), ...]]  (task "classifier")

Images are uint8 arrays as `nnlab.ingest.image_files.read_image` gives them ((H, W) grey or
(H, W, 3) RGB, any size); they go through the run's own evaluation transform
(`nnlab.datasets.images.ImageTransform`: channels, antialiased resize to image_size x image_size,
(pixel / 255 - mean) / std), so a run and its export see exactly what training's evaluation saw.

Every model has a fingerprint: a hash of its weights and preprocessing, identical for a run and
its export, so that a gallery built with one model refuses another model's embeddings.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nnlab.datasets.images import ImageTransform, load_image_source
from nnlab.datasets.kinds import is_drawings
from nnlab.datasets.splits import image_splits
from nnlab.errors import DataError, ModelError, NnlabError
from nnlab.inference.models.backends import (
    Backend,
    OnnxBackend,
    TorchBackend,
    export_task,
    is_export_dir,
    read_export_info,
    trained_module,
)
from nnlab.inference.models.doodle import top_classes
from nnlab.ingest.image_files import read_image
from nnlab.metrics import FPR_TARGETS
from nnlab.runs.run import Run

TASKS = ("classifier", "embedding")
DEFAULT_FPR = 1e-3
BATCH = 64
MAX_PIXELS = 40_000_000  # larger images are refused from their header (a photo of 40 megapixels is huge)


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image becomes the model's input (the run's evaluation transform)."""

    image_size: int
    channels: int
    mean: float
    std: float

    @classmethod
    def from_config(cls, data: Any) -> ImagePreprocessing:
        return cls(int(data.image_size), int(data.channels), float(data.mean), float(data.std))

    @classmethod
    def from_json(cls, info: dict[str, Any], source: str = "preprocessing.json") -> ImagePreprocessing:
        try:
            d = info["image"]
            prep = cls(int(d["image_size"]), int(d["channels"]), float(d["mean"]), float(d["std"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{source}: missing or invalid image preprocessing field ({exc})") from None
        shape = list((info.get("input") or {}).get("shape", []))[1:]
        if prep.image_size < 1 or prep.channels not in (1, 3) or not (math.isfinite(prep.mean) and prep.std > 0
                                                                       and math.isfinite(prep.std)) \
                or (shape and shape != [prep.channels, prep.image_size, prep.image_size]):
            raise ModelError(f"{source}: image preprocessing {prep.to_json()} does not fit the model's input "
                             f"{shape} (edited by hand?); export the run again")
        return prep

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @cached_property
    def transform(self) -> ImageTransform:
        return ImageTransform(self.image_size, self.channels, augment=False, mean=self.mean, std=self.std)

    def to_input(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images of any sizes -> float32 (B, C, H, W)."""
        if not len(images):
            return np.zeros((0, self.channels, self.image_size, self.image_size), dtype=np.float32)
        return torch.stack([self.transform(np.ascontiguousarray(im)) for im in images]).numpy()


def check_image_run(run: Run) -> None:
    """Only torch runs on image data are image models."""
    if run.config.engine != "torch":
        raise NnlabError(f"{run.path}: a {run.config.engine} run; only torch runs can be exported or served")
    if is_drawings(run.config):
        raise NnlabError(f"{run.path}: trained on drawings (data.kind = {run.config.data.kind!r}); "
                         "use the doodle demo (nnlab serve) for it")


def run_module(run: Run) -> tuple[nn.Module, str]:
    """The run's best checkpoint as the module to export or serve, and its task: an embedding
    model (it has ``embed``) answers its L2-normalised embedding, any other model its logits."""
    check_image_run(run)
    return trained_module(run)


def fingerprint(module: nn.Module, prep: ImagePreprocessing) -> str:
    """sha256 (first 16 hex digits) of the preprocessing and every weight and buffer, in name order."""
    h = hashlib.sha256(json.dumps(prep.to_json(), sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_thresholds(run: Run) -> dict[str, float]:
    """The open-set verification thresholds the run measured at training time, by FPR ("0.001": cosine)."""
    try:
        found = (run.read_json("metrics.json").get("test") or {}).get("threshold_at_fpr") or {}
    except (OSError, json.JSONDecodeError):  # NnlabError (no metrics.json) is a ValueError too: it propagates
        return {}
    return {k: float(v) for k, v in found.items() if v is not None}


def validation_images(run: Run, limit: int = 64) -> list[np.ndarray]:
    """Up to `limit` raw (uint8) images of the run's validation split (test when val is empty), in split order."""
    return validation_set(run, limit)[0]


def validation_set(run: Run, limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """`validation_images` (all of them without `limit`) and their class indices."""
    cfg = run.config
    source = load_image_source(cfg)
    splits = image_splits(cfg, source, run.path)
    idx = (splits["val"] if len(splits["val"]) else splits["test"])[:limit]
    return [source.image(int(i)) for i in idx], np.asarray(source.labels)[idx]


class ImageModel:
    """A loaded image model on its backend (`backends.Backend`, torch or onnxruntime); thread-safe, so one
    instance serves every request."""

    def __init__(self, runtime: Backend, path: Path, name: str, prep: ImagePreprocessing,
                 fingerprint: str, thresholds: dict[str, float] | None = None) -> None:
        if runtime.task not in TASKS:
            raise ModelError(f"{path}: unknown task {runtime.task!r} (expected {' or '.join(TASKS)})")
        self.runtime, self.path, self.name, self.task, self.classes = runtime, path, name, runtime.task, runtime.classes
        self.prep, self.fingerprint, self.thresholds = prep, fingerprint, dict(thresholds or {})

    @property
    def backend(self) -> str:
        """"torch" or "onnxruntime"."""
        return self.runtime.name

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's raw outputs (logits or embeddings) for a preprocessed batch."""
        return self.runtime.outputs(x)

    def _batches(self, images: Sequence[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
        for lo in range(0, len(images), batch_size):
            yield self.runtime.predict_batch(self.prep.to_input(images[lo:lo + batch_size]))

    def embed(self, images: Sequence[np.ndarray], batch_size: int = BATCH) -> np.ndarray:
        """(N, D) float32 unit vectors of uint8 images."""
        if self.task != "embedding":
            raise NnlabError(f"{self.path}: an image classifier, not an embedding model (it was trained without "
                             "model.embedding_dim or a margin head); galleries need an embedding model")
        parts = list(self._batches(images, batch_size))
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), dtype=np.float32)

    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = BATCH) -> np.ndarray:
        """(N, classes) softmax probabilities of uint8 images."""
        if self.task != "classifier":
            raise NnlabError(f"{self.path}: an embedding model; it identifies people against a gallery "
                             "(nnlab identify, nnlab serve --gallery) instead of predicting classes")
        return np.concatenate(list(self._batches(images, batch_size)))

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """(class, probability) of the k most probable classes of one probability row, best first."""
        return top_classes(self.classes, probs, k)

    def guess(self, images: Sequence[np.ndarray], top_k: int = 3) -> list[list[tuple[str, float]]]:
        return [self.top_k(p, top_k) for p in self.probabilities(images)]

    def threshold(self, fpr: float = DEFAULT_FPR) -> float:
        """The cosine threshold the run's open-set verification ROC gives at `fpr`."""
        key = f"{fpr:g}"
        if key not in self.thresholds:
            have = ", ".join(self.thresholds) or "none"
            raise NnlabError(f"{self.path}: no verification threshold at FPR {key} (the run measured: {have}; "
                             f"they come from metrics.json of an identity-split run); pass --threshold, or "
                             f"--fpr one of {', '.join(f'{t:g}' for t in FPR_TARGETS)}")
        return self.thresholds[key]

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.runtime.precision, "model": self.name, "task": self.task,
                "classes": len(self.classes),
                "fingerprint": self.fingerprint, "preprocessing": self.prep.to_json()}


def is_image_model(path: str | os.PathLike) -> bool:
    """Whether `path` is an image model (a run on image data, or its export) rather than a doodle model."""
    path = Path(path)
    if is_export_dir(path):
        return read_export_info(path).get("task") in TASKS
    if (path / "config.toml").is_file():
        return not is_drawings(Run.open(path).config)
    return False


def load_image_model(path: str | os.PathLike, threads: int | None = None) -> ImageModel:
    """A run directory (torch, best checkpoint) or an `nnlab export` directory (onnxruntime)."""
    path = Path(path)
    if (path / "model.onnx").is_file():
        return _load_export(path, threads)
    if (path / "config.toml").is_file():
        run = Run.open(path)
        check_image_run(run)
        runtime = TorchBackend.from_run(run, threads)
        prep = ImagePreprocessing.from_config(run.config.data)
        return ImageModel(runtime, path=path, name=run.config.model.name, prep=prep,
                          fingerprint=fingerprint(runtime.module, prep), thresholds=run_thresholds(run))
    raise NnlabError(f"{path}: neither a run directory (config.toml) nor an export directory (model.onnx)")


def _load_export(path: Path, threads: int | None) -> ImageModel:
    info = read_export_info(path)
    task = export_task(info)
    if task not in TASKS:
        raise NnlabError(f"{path}: an export of a doodle model (task {task!r}); serve it with "
                         "`nnlab serve`, it cannot classify or embed images")
    if "fingerprint" not in info:
        raise ModelError(f"{path}/preprocessing.json: no fingerprint; export the run again")
    return ImageModel(OnnxBackend.from_export(path, threads, info), path=path, name=str(info.get("model", "?")),
                      prep=ImagePreprocessing.from_json(info), fingerprint=str(info["fingerprint"]),
                      thresholds=(info.get("verification") or {}).get("threshold_at_fpr"))


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None,
                 reduce_to: int | None = None) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) in memory -> uint8 as `read_image` gives it (`reduce_to`: may be
    decoded smaller, see there); DataError when corrupt or empty, ImageTooLargeError over `max_pixels`."""
    if not data:
        raise DataError(f"{name}: empty image")
    return read_image(io.BytesIO(data), name=name, max_pixels=max_pixels, reduce_to=reduce_to)
