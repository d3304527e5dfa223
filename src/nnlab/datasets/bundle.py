"""What a trainer receives from the data layer: loaders per split, with ids and labels in loader order."""

from __future__ import annotations

from collections.abc import Callable

from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import DataLoader

STROKE_KINDS = ("strokes", "synth")  # data kinds read as drawings (the rest are image kinds)

@dataclass
class DataBundle:
    """What a trainer needs: loaders per split, plus the ids and labels of each split in loader order."""

    classes: list[str]
    in_chans: int
    image_size: int
    loaders: dict[str, DataLoader]
    ids: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    image: Callable[[int], np.ndarray] | None = None  # image data: the raw image of an id (plots of examples)

    def has(self, split: str) -> bool:
        return split in self.loaders and len(self.labels.get(split, ())) > 0
