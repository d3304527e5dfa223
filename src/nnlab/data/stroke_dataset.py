"""Batches of rendered drawings for PyTorch, drawn in DataLoader worker processes.

The sampler yields whole batches (positions into the dataset plus a seed) and the dataset
renders each batch with one `render` call, so a worker's cost per batch is one store read,
one optional augmentation and one kernel call, with no Python loop per drawing:

    ds = StrokeDataset(store, train_idx, size=64, encoding="time-decay", augment=StrokeAugment())
    sampler = TrainBatchSampler(len(ds), batch_size=256, steps_per_epoch=1000, seed=0)
    loader = DataLoader(ds, batch_size=None, sampler=sampler, num_workers=4)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, labels, indices in loader: ...

`images` is float32 (B, C, size, size) in [0, 1], `labels` int64 and `indices` the int64
store indices of the drawings (look up `store.key_ids[indices]` for MAP@3 by key_id).
Data order and augmentation depend only on (seed, epoch, step), never on the number of
workers, so a run can stop after any epoch and resume with the same batches.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nnlab.augment import StrokeAugment
from nnlab.data.drawing import StrokeBatch
from nnlab.errors import ConfigError
from nnlab.render import ENCODINGS, render

BatchRequest = tuple[np.ndarray, int]  # (positions into the dataset, seed of the batch)


class StrokeSource(Protocol):
    """What the dataset needs from a stroke store."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray) -> StrokeBatch: ...


class StrokeDataset(Dataset):
    """Drawings `indices` of a stroke store, rendered a batch at a time.

    dataset[request] takes a BatchRequest from the samplers below (or a bare array of
    positions) and returns (images, labels, indices) for the whole batch. `augment` is
    applied only when given: pass it for the training split, None for evaluation.
    """

    def __init__(self, store: StrokeSource, indices: Sequence[int] | np.ndarray | None = None, *,
                 size: int = 64, encoding: str = "time-decay", line_width: float | None = None,
                 antialias: bool = True, padding: float = 0.0,
                 augment: StrokeAugment | None = None, seed: int = 0) -> None:
        if encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}")
        self.store = store
        self.indices = (np.arange(len(store), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(store)):
            raise ConfigError(f"StrokeDataset: indices must lie in [0, {len(store)}) "
                              f"(the store's size), got {self.indices.min()}..{self.indices.max()}")
        self.size = size
        self.encoding = encoding
        self.line_width = line_width
        self.antialias = antialias
        self.padding = padding
        self.augment = augment
        self.seed = seed
        self.channels = ENCODINGS[encoding]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, request: BatchRequest | np.ndarray | Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(request, tuple) and len(request) == 2 and np.isscalar(request[1]):
            positions, batch_seed = np.asarray(request[0], dtype=np.int64), int(request[1])
        else:
            positions = np.asarray(request, dtype=np.int64)
            batch_seed = zlib.crc32(positions.tobytes())  # same batch, same augmentation
        idx = self.indices[positions]
        batch = self.store.batch(idx)
        if self.augment is not None:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, batch_seed]))
            batch = self.augment(batch, rng)
        x = to_model_input(batch, size=self.size, encoding=self.encoding, line_width=self.line_width,
                           antialias=self.antialias, padding=self.padding)
        y = torch.from_numpy(np.asarray(self.store.labels)[idx].astype(np.int64))
        return x, y, torch.from_numpy(idx)


def to_model_input(drawings, size: int, encoding: str, line_width: float | None = None, antialias: bool = True,
                   padding: float = 0.0) -> torch.Tensor:
    """Render and scale to [0, 1]: the one preprocessing of drawings, shared by training,
    prediction, ONNX export and the web demo. Returns float32 (B, C, size, size)."""
    images = render(drawings, size=size, encoding=encoding, line_width=line_width, antialias=antialias,
                    padding=padding)
    return torch.from_numpy(images).float().div_(255.0)


def _batch_seed(seed: int, epoch: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step]).generate_state(1, np.uint32)[0])


def _check_sampler(name: str, n: int, min_n: int, batch_size: int, rank: int, world_size: int) -> None:
    if n < min_n or batch_size <= 0:
        raise ConfigError(f"{name} needs n >= {min_n} and batch_size > 0 (got n={n}, batch_size={batch_size})")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")


class TrainBatchSampler(Sampler[BatchRequest]):
    """Endless shuffled batches, cut into epochs of `steps_per_epoch` steps.

    The data order is one long stream of permutations of range(n) (permutation k seeded
    from (seed, k)); global step g of the run takes items [g * B, (g + 1) * B) of it, where
    B = batch_size * world_size, and rank r keeps its own batch_size slice. So every item
    is seen once before any is seen twice, epochs need not divide the data, and epoch e's
    batches are known from (seed, e) alone: call set_epoch(e) before iterating.
    """

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int | None = None, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        _check_sampler("TrainBatchSampler", n, 1, batch_size, rank, world_size)
        self.n = n
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        global_batch = batch_size * world_size
        self.steps_per_epoch = (max(n // global_batch, 1) if steps_per_epoch is None
                                else int(steps_per_epoch))
        if self.steps_per_epoch <= 0:
            raise ConfigError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        self.seed = seed
        self.epoch = 0
        self._perms: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _permutation(self, k: int) -> np.ndarray:
        if k not in self._perms:
            if len(self._perms) >= 2:  # an epoch spans at most a few permutations
                self._perms.pop(min(self._perms))
            dtype = np.int32 if self.n < 2**31 else np.int64
            perm = np.arange(self.n, dtype=dtype)
            np.random.default_rng(np.random.SeedSequence([self.seed, k])).shuffle(perm)
            self._perms[k] = perm
        return self._perms[k]

    def _stream(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            k, offset = divmod(start + done, self.n)
            take = min(count - done, self.n - offset)
            out[done:done + take] = self._permutation(k)[offset:offset + take]
            done += take
        return out

    def __iter__(self) -> Iterator[BatchRequest]:
        global_batch = self.batch_size * self.world_size
        for step in range(self.steps_per_epoch):
            g = self.epoch * self.steps_per_epoch + step
            start = g * global_batch + self.rank * self.batch_size
            yield self._stream(start, self.batch_size), _batch_seed(self.seed, self.epoch, step)


class EvalBatchSampler(Sampler[BatchRequest]):
    """Every item once, in order, in batches of batch_size (the last one may be short); with
    world_size > 1, rank r takes items r, r + world_size, ... (the image loaders' convention,
    so the trainer interleaves the ranks' predictions back the same way)."""

    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> None:
        _check_sampler("EvalBatchSampler", n, 0, batch_size, rank, world_size)
        self.size = n
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do (the order never changes); here so both samplers share one API."""

    def positions(self) -> np.ndarray:
        return np.arange(self.rank, self.size, self.world_size, dtype=np.int64)

    def __len__(self) -> int:
        return -(-len(self.positions()) // self.batch_size)

    def __iter__(self) -> Iterator[BatchRequest]:
        mine = self.positions()
        for b, lo in enumerate(range(0, len(mine), self.batch_size)):
            yield mine[lo:lo + self.batch_size], b


def stroke_loader(dataset: StrokeDataset, batch_size: int, *, train: bool,
                  steps_per_epoch: int | None = None, seed: int = 0, num_workers: int = 0,
                  rank: int = 0, world_size: int = 1, **loader_kwargs: Any) -> DataLoader:
    """A DataLoader over `dataset` with the right sampler (shuffled and endless when
    `train`, in order otherwise); reach the sampler as `loader.sampler` to set_epoch."""
    if train:
        sampler: Sampler = TrainBatchSampler(len(dataset), batch_size, steps_per_epoch, seed=seed,
                                             rank=rank, world_size=world_size)
    else:
        sampler = EvalBatchSampler(len(dataset), batch_size, rank=rank, world_size=world_size)
    if num_workers > 0:
        loader_kwargs.setdefault("persistent_workers", True)
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers,
                      **loader_kwargs)


def stroke_store(cfg):
    """The StrokeStore a `strokes` or `synth` experiment reads (synthetic doodles are made here)."""
    from nnlab.data.store import StrokeStore

    d = cfg.data
    if d.kind == "synth":
        from nnlab.data.synth import synth_drawings

        return StrokeStore.from_drawings(synth_drawings(d.classes or 12, d.per_class, seed=cfg.seed))
    if not d.path:
        raise ConfigError("data.path: the stroke store to read (made by `nnlab data prepare`)")
    return StrokeStore.open(d.path)


def stroke_splits(cfg, store) -> dict[str, np.ndarray]:
    """Store indices per split (by key_id hash), keeping labelled drawings only (and recognized
    ones when `data.recognized_only`): what training, evaluation and the web demo's samples use."""
    d = cfg.data
    keep = np.asarray(store.labels) >= 0  # unlabelled drawings (test files) cannot be trained on
    if d.recognized_only:
        keep &= np.asarray(store.recognized, dtype=bool)
    return {name: idx[keep[idx]] for name, idx in store.split(d.val_fraction, d.test_fraction).items()}


def build_stroke_data(cfg, rank: int = 0, world: int = 1):
    """The `strokes` (a store from `nnlab data prepare`) and `synth` (doodles drawn on the fly) kinds:
    split by key_id hash, rendered per batch; ids are key_ids so MAP@3 is keyed by key_id."""
    from nnlab.data import DataBundle
    from nnlab.errors import DataError

    d = cfg.data
    store = stroke_store(cfg)
    splits = stroke_splits(cfg, store)
    if not len(splits["train"]):
        raise DataError(f"{d.path or 'synth'}: no labelled drawings in the training split")
    augment = StrokeAugment() if d.augment else None
    loaders, ids, labels = {}, {}, {}
    for name, idx in splits.items():
        train = name == "train"
        dataset = StrokeDataset(store, idx, size=d.image_size, encoding=d.encoding, line_width=d.line_width,
                                padding=d.padding, augment=augment if train else None, seed=cfg.seed)
        loaders[name] = stroke_loader(dataset, d.batch_size if train else (d.eval_batch_size or d.batch_size),
                                      train=train, steps_per_epoch=cfg.train.steps_per_epoch if train else None,
                                      seed=cfg.seed, num_workers=d.num_workers, rank=rank, world_size=world)
        ids[name] = np.asarray(store.key_ids)[idx]
        labels[name] = np.asarray(store.labels)[idx].astype(np.int64)
    if d.channels != ENCODINGS[d.encoding]:
        raise ConfigError(f"data.channels = {d.channels} but encoding {d.encoding!r} has {ENCODINGS[d.encoding]}")
    return DataBundle(classes=list(store.classes), in_chans=ENCODINGS[d.encoding], image_size=d.image_size,
                      loaders=loaders, ids=ids, labels=labels,
                      info={"sizes": {k: len(v) for k, v in splits.items()}, "store": d.path or "synth",
                            "skipped": store.meta.get("skipped", {}),
                            # per class, for the fallback guess of unreadable drawings at prediction time
                            "train_counts": np.bincount(labels["train"], minlength=len(store.classes)).tolist()})
