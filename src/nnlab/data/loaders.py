"""Data sources -> split -> per-split datasets and loaders (torch), for any `data.kind`.

`build_data(cfg)` is the one entry point the trainers use. Image kinds go through
`nnlab.data.images`; Quick, Draw! stroke kinds through `nnlab.data.stroke_dataset`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from nnlab.config import ExperimentConfig, options_for
from nnlab.data.splits import SPLITS, stratified_split
from nnlab.errors import DataError

STROKE_KINDS = ("strokes", "synth")


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

    def has(self, split: str) -> bool:
        return split in self.loaders and len(self.labels.get(split, ())) > 0


class EpochSampler(Sampler[int]):
    """Shuffled (train) or sequential (eval) order fixed by (seed, epoch), sharded across DDP ranks.

    The order depends on nothing but the seed and the epoch, so a resumed run sees the
    same batches as an uninterrupted one.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).numpy()
            if self.world > 1:  # equal shards so every rank runs the same number of steps
                pad = (-len(order)) % self.world
                order = np.concatenate([order, order[:pad]])
        else:
            order = np.arange(self.size)
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return len(self.order())


def build_data(cfg: ExperimentConfig, run_dir: Path | None = None, rank: int = 0, world: int = 1) -> DataBundle:
    """Load the data set the config names, split it, and build a loader per split."""
    if cfg.data.kind in STROKE_KINDS:
        from nnlab.data.stroke_dataset import build_stroke_data

        return build_stroke_data(cfg, rank=rank, world=world)
    return build_image_data(cfg, run_dir, rank, world)


def load_image_source(cfg: ExperimentConfig):
    from nnlab.data.images import LOADERS, load_source

    kind = cfg.data.kind
    if kind not in LOADERS:
        raise DataError(f"data.kind: unknown kind {kind!r} (known: {', '.join(sorted([*LOADERS, *STROKE_KINDS]))})")
    return load_source(kind, **options_for(LOADERS[kind], cfg.data))


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
        from nnlab.data.identity import identity_split  # open-set face recognition (disjoint people)

        splits = identity_split(source.labels, cfg, source.classes)
    elif source.test_mask is not None:
        test = np.flatnonzero(source.test_mask)
        rest = np.flatnonzero(~source.test_mask)
        inner = stratified_split(source.labels[rest], cfg.data.val_fraction, 0.0, cfg.seed)
        splits = {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test}
    else:
        splits = stratified_split(source.labels, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    if file is not None:
        file.write_text(json.dumps({"size": len(source.labels), "seed": cfg.seed} |
                                   {k: v.tolist() for k, v in splits.items()}))
    return splits


def build_image_data(cfg: ExperimentConfig, run_dir: Path | None, rank: int, world: int) -> DataBundle:
    from nnlab.data.images import ImageDataset, make_transform

    source = load_image_source(cfg)
    splits = image_splits(cfg, source, run_dir)
    known, extra_info = len(source.classes), {}
    if cfg.data.split == "identity":  # the classifier covers the training identities; the unseen ones follow
        from nnlab.data.identity import open_set_source

        source, known, unseen = open_set_source(source, splits)
        extra_info = {"open_set_identities": unseen}
    d = cfg.data
    loaders, ids, labels = {}, {}, {}
    for split, index in splits.items():
        train = split == "train"
        transform = make_transform(train=train, image_size=d.image_size, channels=d.channels,
                                   augment=d.augment and train, mean=d.mean, std=d.std)
        dataset = ImageDataset(source, index, transform)
        sampler = EpochSampler(len(index), shuffle=train, seed=cfg.seed, rank=rank, world=world)
        loaders[split] = DataLoader(dataset, batch_size=d.batch_size if train else (d.eval_batch_size or d.batch_size),
                                    sampler=sampler, num_workers=d.num_workers,
                                    persistent_workers=d.num_workers > 0, drop_last=False)
        ids[split] = index
        labels[split] = source.labels[index]
    return DataBundle(classes=list(source.classes)[:known], in_chans=d.channels, image_size=d.image_size,
                      loaders=loaders, ids=ids, labels=labels,
                      info={"sizes": {k: len(v) for k, v in splits.items()},
                            "skipped": getattr(source, "skipped", None) or {}} | extra_info)
