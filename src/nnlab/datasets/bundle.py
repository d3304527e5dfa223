"""What a trainer receives from the data layer: loaders per split, with ids and labels in loader order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from nnlab.config import DataConfig
from nnlab.device import single_thread_worker

def loader_options(d: DataConfig, pin_memory: bool = False) -> dict[str, Any]:
    """DataLoader keywords from the data section: workers, and where there are workers, whether they
    persist and how many batches each keeps ready. `pin_memory` (the trainer sets it on CUDA) puts
    batches in page-locked memory, so the copies to the GPU can be non-blocking."""
    opts: dict[str, Any] = {"num_workers": d.num_workers, "pin_memory": pin_memory}
    if d.num_workers > 0:  # torch rejects both without workers
        opts["persistent_workers"] = d.persistent_workers
        opts["worker_init_fn"] = single_thread_worker  # one thread per worker: device.choose_threads' rule
        if d.prefetch_factor is not None:
            opts["prefetch_factor"] = d.prefetch_factor
    return opts


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
