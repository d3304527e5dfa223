"""Image data sets for torch: per-split transforms, the Dataset, and `build_image_data`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader

from nnlab.config import ExperimentConfig, options_for
from nnlab.datasets.bundle import DataBundle, loader_options
from nnlab.datasets.identity import open_set_source
from nnlab.datasets.samplers import EpochSampler
from nnlab.datasets.splits import image_splits
from nnlab.errors import ConfigError, DataError
from nnlab.ingest.image_kinds import LOADERS, load_source
from nnlab.ingest.images import ImageSource


def _v2():
    """torchvision.transforms.v2, imported on first use: torchvision imports torch._dynamo (about 3 s of CPU per
    process), which a process that never transforms an image (a drawing model's training or server) skips."""
    from torchvision.transforms import v2  # heavy (torch._dynamo): only image transforms need it

    return v2


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, channels, H, W): grey repeated to RGB, RGB to grey by
    luminance (ITU-R 601, as Pillow and torchvision do), alpha dropped."""
    if images.shape[1] in (2, 4):  # grey + alpha, RGB + alpha
        images = images[:, :-1]
    have = images.shape[1]
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        return _v2().functional.rgb_to_grayscale(images, num_output_channels=1)
    if have != channels:
        raise DataError(f"cannot turn images of {have} channels into {channels}")
    return images


class ImageTransform:
    """One split's transform: uint8 image(s) -> normalised float tensor(s).

    Steps: convert to `channels` channels; resize to `image_size` x `image_size`
    (antialiased); when `augment` is on, a small random affine per image
    (torchvision.transforms.v2.RandomAffine: rotation up to 10 degrees, translation
    up to 10 %, scale 0.9 to 1.1, black fill); scale to 0..1; normalise with `mean`
    and `std`. Calling it transforms one image; `batch` does the same for a stack
    of images at once (what `ImageDataset.batch` uses for in-memory sources).
    """

    def __init__(self, image_size: int, channels: int, augment: bool,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> None:
        if image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {image_size}")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}")
        means = [float(mean)] * channels if isinstance(mean, (int, float)) else [float(m) for m in mean]
        stds = [float(std)] * channels if isinstance(std, (int, float)) else [float(s) for s in std]
        if len(means) != channels or len(stds) != channels or min(stds) <= 0:
            raise ConfigError(f"mean and std need one value or {channels} values, and std > 0")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.augment = bool(augment)
        self.mean = tuple(means)
        self.std = tuple(stds)
        self._affine = (_v2().RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
                        if self.augment else None)
        # (x / 255 - mean) / std as one multiply and one subtract.
        self._mul = (1.0 / (255.0 * torch.tensor(stds))).view(1, -1, 1, 1)
        self._sub = (torch.tensor(means) / torch.tensor(stds)).view(1, -1, 1, 1)

    def __repr__(self) -> str:
        return (f"ImageTransform(image_size={self.image_size}, channels={self.channels}, "
                f"augment={self.augment}, mean={self.mean}, std={self.std})")

    def __call__(self, image: Any) -> torch.Tensor:
        """One PIL image or uint8 array (H, W) / (H, W, C) -> (channels, size, size) float."""
        return self._apply(_v2().functional.to_image(image).as_subclass(torch.Tensor)[None])[0]

    def batch(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W) or (N, H, W, C) -> (N, channels, size, size) float."""
        images = torch.as_tensor(images)
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return self._apply(images)

    def _apply(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise DataError(f"images must be uint8, got {images.dtype}")
        images = _to_channels(images, self.channels)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = _v2().functional.resize(images.contiguous(), [self.image_size, self.image_size],
                                          antialias=True)
        if self._affine is not None:
            # One random draw per image (the transform on a stack would share one).
            images = torch.stack([self._affine(image) for image in images])
        return images.float().mul_(self._mul).sub_(self._sub)


def make_transform(train: bool, image_size: int, channels: int, augment: bool,
                   mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                   ) -> ImageTransform:
    """The transform of one split: uint8 image (PIL or (H, W[, C]) array) -> float tensor.

    Returns an `ImageTransform` giving (channels, image_size, image_size) tensors:
    grey repeated to 3 channels when `channels == 3`, colour turned grey when
    `channels == 1`, resized, augmented (small random affine) only when both `train`
    and `augment` are true, then normalised with `mean` and `std`.
    """
    return ImageTransform(image_size, channels, augment=train and augment, mean=mean, std=std)


class ImageDataset(torch.utils.data.Dataset):
    """The samples `indices` of a source, each passed through this dataset's transform.

    Every split builds its own ImageDataset with its own transform; the transform is
    fixed at construction (a read-only attribute) and the shared `ImageSource` holds
    none, so making the validation set can never change what the training set does
    (the notebook this replaces set its validation transform on a dataset object
    shared by both splits).
    """

    def __init__(self, source: ImageSource, indices: np.ndarray, transform: Callable) -> None:
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError("indices must be a 1-D integer array")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(source)):
            raise ValueError(f"indices must lie in 0..{len(source) - 1}")
        self._source = source
        self._indices = indices
        self._indices.setflags(write=False)
        self._transform = transform

    @property
    def source(self) -> ImageSource:
        """The (shared, transform-free) source of the samples."""
        return self._source

    @property
    def indices(self) -> np.ndarray:
        """Indices of this dataset's samples in the source (read-only)."""
        return self._indices

    @property
    def transform(self) -> Callable:
        """This dataset's own transform; read-only, so no other split can replace it."""
        return self._transform

    @property
    def labels(self) -> np.ndarray:
        """Labels of this dataset's samples, in order."""
        return self._source.labels[self._indices]

    @property
    def classes(self) -> list[str]:
        """Class names of the source (index = label)."""
        return self._source.classes

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self._indices[i])
        return self._transform(self._source.image(index)), int(self._source.labels[index])

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch at once as a list of samples (torch's DataLoader calls this when it exists)."""
        images, labels = self.batch(positions)
        return list(zip(images.unbind(0), labels.tolist()))

    def batch(self, positions: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `positions` as one (images, labels) pair of tensors.

        In-memory sources with an `ImageTransform` are transformed as one stack, much faster
        than image by image; anything else goes image by image through `__getitem__`'s path.
        """
        index = self._indices[np.asarray(positions, dtype=np.int64)]
        if not len(index):
            raise ValueError("an empty batch")
        labels = torch.as_tensor(self._source.labels[index]).long()
        stack = getattr(self._transform, "batch", None)
        if stack is not None and self._source.images is not None:
            return stack(self._source.images[index]), labels
        return torch.stack([self._transform(self._source.image(int(i))) for i in index]), labels


class ImageBatches(torch.utils.data.Dataset):
    """An `ImageDataset` read a batch at a time: item `positions` is `dataset.batch(positions)`.

    The loaders use it with a batching `EpochSampler` and `batch_size=None`, so a batch is made
    as one stack and never split into samples and collated back (the training loop's overhead
    over a bare loop on in-memory tensors, `benchmarks/trainer_overhead.py`)."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.batch(positions)


def load_image_source(cfg: ExperimentConfig) -> ImageSource:
    """The image source of an image kind (the schema has checked the kind and its options)."""
    return load_source(cfg.data.kind, **options_for(LOADERS[cfg.data.kind], cfg.data))


def build_image_data(cfg: ExperimentConfig, run_dir: Path | None, rank: int, world: int,
                     pin_memory: bool = False) -> DataBundle:
    source = load_image_source(cfg)
    splits = image_splits(cfg, source, run_dir)
    known, extra_info = len(source.classes), {}
    if cfg.data.split == "identity":  # the classifier covers the training identities; the unseen ones follow
        source, known, unseen = open_set_source(source, splits)
        extra_info = {"open_set_identities": unseen}
    d = cfg.data
    loaders, ids, labels = {}, {}, {}
    for split, index in splits.items():
        train = split == "train"
        transform = make_transform(train=train, image_size=d.image_size, channels=d.channels,
                                   augment=d.augment and train, mean=d.mean, std=d.std)
        batches = EpochSampler(len(index), shuffle=train, seed=cfg.seed, rank=rank, world=world,
                               batch_size=d.batch_size if train else (d.eval_batch_size or d.batch_size))
        loaders[split] = DataLoader(ImageBatches(ImageDataset(source, index, transform)), batch_size=None,
                                    sampler=batches, **loader_options(d, pin_memory))
        ids[split] = index
        labels[split] = source.labels[index]
    return DataBundle(classes=list(source.classes)[:known], in_chans=d.channels, image_size=d.image_size,
                      loaders=loaders, ids=ids, labels=labels, image=source.image,
                      info={"sizes": {k: len(v) for k, v in splits.items()},
                            "skipped": getattr(source, "skipped", None) or {}} | extra_info)
