"""The registry of data kinds: one entry per `data.kind`, saying what the data is (images or drawings),
how it becomes a `DataBundle`, and how its examples become the model's input.

    data_kind(cfg).build(cfg, run_dir, rank, world, pin_memory) -> DataBundle
    is_drawings(cfg)          True for strokes and synth (the doodle demo, submissions, stroke renders)
    takes_sequences(cfg)      drawings read as point sequences (data.input = "sequence")
    model_input(items, cfg)   a batch of the model's input from raw examples (images or drawings)

Every question "which kind is this?" asks here; adding a kind is one `register_kind` call (see
docs/architecture.md, "Adding a data kind").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from nnlab import config
from nnlab.schema_errors import did_you_mean
from nnlab.datasets.bundle import DataBundle
from nnlab.datasets.images import build_image_data, make_transform
from nnlab.datasets.strokes import build_stroke_data, drawing_input, stroke_input_channels
from nnlab.errors import ConfigError
from nnlab.ingest.image_kinds import LOADERS
from nnlab.ingest.images import ImageSource
from nnlab.strokes.sequence import FEATURES

Modality = Literal["images", "drawings"]
Builder = Callable[..., DataBundle]  # (cfg, run_dir, rank, world, pin_memory) -> DataBundle


@dataclass(frozen=True)
class DataKind:
    """One `data.kind`: its modality, its builder, its model-input preprocessing and its config section.

    `source` is the reader of an image kind (`nnlab.ingest.image_kinds` loaders, options from the data
    section); `model_input(items, data)` makes a float32 batch the way evaluation saw it. `section` names
    the kind's class in `nnlab.config` (`config_class`; the one `DataConfig` until a class per kind exists)."""

    name: str
    modality: Modality
    build: Builder
    model_input: Callable[[Sequence[Any], Any], torch.Tensor]
    summary: str
    source: Callable[..., ImageSource] | None = None
    section: str | None = None  # the class name in nnlab.config; default: config.DATA_KINDS[name]

    @property
    def config_class(self) -> type:
        """The kind's pydantic section class (`nnlab.config.DATA_KINDS`, the schema's one list of kinds)."""
        if self.section:
            return getattr(config, self.section)
        return config.DATA_KINDS.get(self.name, config.DataSection)


def image_input(images: Sequence[Any], data: Any) -> torch.Tensor:
    """uint8 images (H, W) or (H, W, C) -> float32 (B, C, H, W) through the evaluation transform
    (channels, resize, (pixel / 255 - mean) / std), exactly as the val and test splits were."""
    transform = make_transform(train=False, image_size=data.image_size, channels=data.channels, augment=False,
                               mean=data.mean, std=data.std)
    return torch.stack([transform(im) for im in images])


def _build_drawings(cfg: Any, run_dir: Path | None = None, rank: int = 0, world: int = 1,
                    pin_memory: bool = False) -> DataBundle:
    """Drawings split by key_id hash, so they need no run directory (`build_stroke_data`)."""
    return build_stroke_data(cfg, rank=rank, world=world, pin_memory=pin_memory)


KINDS: dict[str, DataKind] = {}


def register_kind(kind: DataKind, section: type | None = None) -> DataKind:
    """Add a kind: its entry, its config `section` class if the schema does not know the kind yet (a
    `config.DataSection` subclass whose `kind` is a Literal of the name), and for an image kind its
    `source` as an `nnlab.ingest.image_kinds` loader."""
    if kind.modality not in ("images", "drawings"):
        raise ConfigError(f"data kind {kind.name!r}: modality must be 'images' or 'drawings', got {kind.modality!r}")
    if section is not None:
        config.register_data_section(section)
    if kind.source is not None:
        LOADERS.setdefault(kind.name, kind.source)
    KINDS[kind.name] = kind
    return kind


_IMAGE_KINDS = {
    "digits": "scikit-learn's 8x8 digits",
    "idx": "MNIST / Fashion-MNIST IDX files",
    "npz": "two arrays of an .npz file",
    "folder": "one sub-folder of image files per class",
    "bitmap": "Quick, Draw! full_numpy_bitmap_<word>.npy files",
    "csv": "rows of pixel values then the class",
}
for _name, _summary in _IMAGE_KINDS.items():
    register_kind(DataKind(_name, "images", build_image_data, image_input, _summary, source=LOADERS[_name]))
register_kind(DataKind("strokes", "drawings", _build_drawings, drawing_input,
                       "a stroke store made by `nnlab data prepare`"))
register_kind(DataKind("synth", "drawings", _build_drawings, drawing_input, "synthetic doodles drawn on the fly"))


def _kind_name(cfg_or_name: Any) -> str:
    """The kind's name from a name, an experiment config or its data section."""
    if isinstance(cfg_or_name, str):
        return cfg_or_name
    data = getattr(cfg_or_name, "data", cfg_or_name)
    return str(data.kind)


def data_kind(cfg_or_name: Any) -> DataKind:
    """The registry entry of a kind name, an experiment config or its data section; an unknown kind is a
    ConfigError naming data.kind with the closest known kind."""
    name = _kind_name(cfg_or_name)
    if name not in KINDS:
        known = sorted(KINDS)
        raise ConfigError(f"data.kind: unknown kind {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})")
    return KINDS[name]


def drawing_kinds() -> list[str]:
    """The kinds read as drawings, in registry order (for messages)."""
    return [k.name for k in KINDS.values() if k.modality == "drawings"]


def is_drawings(cfg_or_name: Any) -> bool:
    """Whether the data are drawings (strokes) rather than images."""
    return data_kind(cfg_or_name).modality == "drawings"


def takes_sequences(cfg_or_data: Any) -> bool:
    """Whether the model reads point sequences (drawings with data.input = "sequence") rather than images."""
    data = getattr(cfg_or_data, "data", cfg_or_data)
    return is_drawings(data) and data.input == "sequence"


def model_input(items: Sequence[Any], cfg_or_data: Any) -> torch.Tensor:
    """The model's float32 input batch for raw examples of the run's kind (images or drawings)."""
    data = getattr(cfg_or_data, "data", cfg_or_data)
    return data_kind(data).model_input(items, data)


def input_channels(data: Any) -> int:
    """The model's input channels for a run's `data` section (5 features per point for sequences)."""
    return stroke_input_channels(data) if is_drawings(data) else data.channels


def example_input_shape(data: Any, points: int = 64) -> tuple[int, ...]:
    """The shape of one example batch of the model's input: (1, C, H, W) images or (1, points, 5) sequences."""
    if takes_sequences(data):
        return (1, min(points, data.max_points), FEATURES)
    return (1, data.channels, data.image_size, data.image_size)
