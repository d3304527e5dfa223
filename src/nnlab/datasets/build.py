"""`build_data(cfg)`: the one entry point the trainers use, for any `data.kind` (`nnlab.datasets.kinds`)."""

from __future__ import annotations

from pathlib import Path

from nnlab.config import ExperimentConfig
from nnlab.datasets.bundle import DataBundle
from nnlab.datasets.kinds import data_kind


def build_data(cfg: ExperimentConfig, run_dir: Path | None = None, rank: int = 0, world: int = 1,
               pin_memory: bool = False) -> DataBundle:
    """Load the data set the config names, split it, and build a loader per split (this rank's shard);
    `pin_memory` for a CUDA trainer (see `loader_options`)."""
    return data_kind(cfg).build(cfg, run_dir, rank, world, pin_memory)
