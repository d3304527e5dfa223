"""Deterministic train/val/test splits of image sets: stratified by label and fixed by the seed (or by
identity for open-set faces), saved in the run's splits.json and reused from it. Quick, Draw!
splits by key_id hash live with the store (`nnlab.store.splits`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnlab.config import ExperimentConfig
from nnlab.datasets.identity import identity_split
from nnlab.errors import DataError
from nnlab.fileio import atomic_write_text

SPLITS = ("train", "val", "test")

def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Indices per split, stratified by label and fixed by the seed (sorted within a split); the config
    schema keeps val_fraction + test_fraction < 1."""
    from sklearn.model_selection import train_test_split  # heavy (SciPy, ~3 s to import): only when splitting

    labels = np.asarray(labels)
    index = np.arange(len(labels))
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


def image_splits(cfg: ExperimentConfig, source, run_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Split indices: reused from the run's splits.json when present, else computed from the seed and saved."""
    file = run_dir / "splits.json" if run_dir is not None else None
    if file is not None and file.exists():
        saved = json.loads(file.read_text())
        if saved.get("size") != len(source.labels):
            raise DataError(f"{file}: saved splits are for {saved.get('size')} examples, the data has "
                            f"{len(source.labels)}; the data changed since this run started")
        return {k: np.asarray(saved[k], dtype=np.int64) for k in SPLITS}
    if cfg.data.split == "identity":
        splits = identity_split(source.labels, cfg, source.classes)
    elif source.test_mask is not None:
        test = np.flatnonzero(source.test_mask)
        rest = np.flatnonzero(~source.test_mask)
        inner = stratified_split(source.labels[rest], cfg.data.val_fraction, 0.0, cfg.seed)
        splits = {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test}
    else:
        splits = stratified_split(source.labels, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    if file is not None:
        atomic_write_text(file, json.dumps({"size": len(source.labels), "seed": cfg.seed} |
                                           {k: v.tolist() for k, v in splits.items()}))
    return splits
