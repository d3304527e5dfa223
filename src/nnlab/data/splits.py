"""Deterministic train/val/test splits: stratified by label for image sets, by key_id hash
for Quick, Draw! (a drawing's split never changes when data is added)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from nnlab.errors import ConfigError

SPLITS = ("train", "val", "test")


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Indices per split, stratified by label and fixed by the seed (sorted within a split)."""
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction + test_fraction}")
    out = {"train": index, "val": index[:0], "test": index[:0]}
    rest = index
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction <= 0:
            continue
        share = fraction / (len(rest) / len(labels))
        counts = np.bincount(labels[rest]) if len(rest) else np.array([0])
        stratify = labels[rest] if counts[counts > 0].min() >= 2 else None
        rest, picked = train_test_split(rest, test_size=share, random_state=seed, stratify=stratify)
        out[name] = np.sort(picked)
    out["train"] = np.sort(rest)
    return out
