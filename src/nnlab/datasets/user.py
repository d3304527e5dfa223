"""Data given from Python (`nnlab.fit(config, train_data=..., val_data=...)`): a torch `Dataset` of
(image, label) pairs or NumPy arrays `(X, y)`, made into the `npz` kind inside the run directory.

The run then holds its own data (RUN/data.npz, and RUN/splits.json when the splits were given), so it
resumes, predicts, evaluates and exports as any image run, in this process or another. Images become
uint8 (N, H, W[, C]) as the npz kind reads them (`ingest.images.to_uint8`: floats in 0..1 scaled by 255); a
channels-first array or tensor ((N, C, H, W), as torchvision's `ToTensor` gives) is moved to channels
last. Labels are integers (named by `classes`, or the dataset's `classes` attribute, else '0'..'K-1')
or strings.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnlab.config import ExperimentConfig, NpzData, validate
from nnlab.errors import DataError
from nnlab.fileio import atomic_write_bytes, atomic_write_text
from nnlab.ingest.images import check_image_shape, to_uint8

DATA_FILE = "data.npz"
SPLIT_NAMES = ("train", "val", "test")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _channels_last(images: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W[, C]) from channels-first (N, C, H, W) or -last arrays; a single channel dropped."""
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3, 4):
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not len(images):
        raise DataError(f"{where}: no images")
    check_image_shape(images, where)
    return images


def as_arrays(data: Any, where: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(uint8 images, labels, class names or None) of an `(X, y)` pair or a Dataset of (image, label)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        images, labels = _numpy(data[0]), _numpy(data[1])
        names = None
    elif isinstance(data, torch.utils.data.Dataset) or hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if not len(data):
            raise DataError(f"{where}: the dataset is empty")
        pairs = [data[i] for i in range(len(data))]
        if not all(isinstance(p, (tuple, list)) and len(p) >= 2 for p in pairs[:1]):
            raise DataError(f"{where}: a dataset item must be (image, label), got {type(pairs[0]).__name__}")
        images = np.stack([_numpy(p[0]) for p in pairs])
        labels = np.asarray([_numpy(p[1]).item() if np.ndim(_numpy(p[1])) == 0 else _numpy(p[1]) for p in pairs])
        names = list(data.classes) if isinstance(getattr(data, "classes", None), (list, tuple)) else None
    else:
        raise DataError(f"{where}: give a torch Dataset of (image, label) or a pair of arrays (X, y), "
                        f"got {type(data).__name__}")
    labels = labels.reshape(-1) if labels.ndim > 1 and labels.size == len(labels) else labels
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape} (one label each)")
    return as_images(images, where), labels, names


def as_images(images: Any, where: str) -> np.ndarray:
    """A stack of images as uint8 (N, H, W[, C]): channels-first moved last, 0..1 floats scaled by 255."""
    return to_uint8(np.ascontiguousarray(_channels_last(_numpy(images), where)), where)


@dataclass
class UserData:
    """The splits given from Python, as one image set and the indices of each split."""

    images: np.ndarray
    labels: np.ndarray  # class names (strings), as the npz kind reads them back
    sizes: dict[str, int]

    @classmethod
    def from_inputs(cls, train: Any, val: Any = None, test: Any = None,
                    classes: Sequence[str] | None = None) -> UserData:
        parts = {name: as_arrays(d, f"{name}_data") for name, d in zip(SPLIT_NAMES, (train, val, test),
                                                                       strict=True) if d is not None}
        shapes = {name: p[0].shape[1:] for name, p in parts.items()}
        if len(set(shapes.values())) > 1:
            raise DataError("train_data, val_data, test_data: images of different shapes "
                            f"({', '.join(f'{k} {v}' for k, v in shapes.items())})")
        names = list(classes) if classes is not None else next((p[2] for p in parts.values() if p[2]), None)
        labels = [_label_names(p[1], names, f"{name}_data") for name, p in parts.items()]
        return cls(np.concatenate([p[0] for p in parts.values()]), np.concatenate(labels),
                   {name: len(p[0]) for name, p in parts.items()})

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """The experiment with its data section made the npz kind (path set by `write`); the image options
        (image_size, channels, mean, std, augment, batch sizes, workers) are the config's own."""
        if getattr(cfg.data, "modality", "images") != "images":
            raise DataError(f"train_data: images, but the config's data.kind {cfg.data.kind!r} is for drawings")
        raw = cfg.model_dump(mode="json", exclude_none=True)
        raw["data"] = {k: v for k, v in raw["data"].items() if k in NpzData.model_fields and k not in ("path",)}
        raw["data"]["kind"] = "npz"
        return validate(raw, "config with train_data")

    def write(self, run_dir: Path, cfg: ExperimentConfig) -> ExperimentConfig:
        """RUN/data.npz (and RUN/splits.json when val or test data were given); the config naming it."""
        buffer = io.BytesIO()
        np.savez(buffer, images=self.images, labels=self.labels)
        atomic_write_bytes(run_dir / DATA_FILE, buffer.getvalue())
        if len(self.sizes) > 1:  # the splits given: image_splits reuses a run's splits.json
            start, splits = 0, {}
            for name in SPLIT_NAMES:
                n = self.sizes.get(name, 0)
                splits[name] = list(range(start, start + n))
                start += n
            atomic_write_text(run_dir / "splits.json", json.dumps({"size": start, "seed": cfg.seed} | splits))
        cfg = cfg.model_copy(deep=True)
        cfg.data.path = str((run_dir / DATA_FILE).resolve())
        return cfg


def _label_names(labels: np.ndarray, names: list[str] | None, where: str) -> np.ndarray:
    """Labels as class-name strings (what the npz kind turns back into sorted classes)."""
    if labels.dtype.kind in "US":
        return labels.astype(str)
    if labels.dtype.kind not in "iub" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise DataError(f"{where}: labels must be whole numbers or strings, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or names is not None and labels.max() >= len(names):
        raise DataError(f"{where}: labels {labels.min()}..{labels.max()} do not index the "
                        f"{len(names) if names is not None else 'given'} classes")
    width = len(str(labels.max()))
    if names is None:  # zero-padded, so that the npz kind's sorted classes keep the numeric order
        return np.array([str(v).zfill(width) for v in labels])
    return np.asarray(names, dtype=str)[labels]
