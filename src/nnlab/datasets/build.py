"""`build_data(cfg)`: the one entry point the trainers use, for any `data.kind`."""

from __future__ import annotations

from pathlib import Path

from nnlab.config import ExperimentConfig
from nnlab.datasets.bundle import STROKE_KINDS, DataBundle
from nnlab.datasets.images import build_image_data
from nnlab.datasets.strokes import build_stroke_data


def build_data(cfg: ExperimentConfig, run_dir: Path | None = None, rank: int = 0, world: int = 1,
               pin_memory: bool = False) -> DataBundle:
    """Load the data set the config names, split it, and build a loader per split (this rank's shard);
    `pin_memory` for a CUDA trainer (see `loader_options`)."""
    if cfg.data.kind in STROKE_KINDS:
        return build_stroke_data(cfg, rank=rank, world=world, pin_memory=pin_memory)
    return build_image_data(cfg, run_dir, rank, world, pin_memory=pin_memory)
