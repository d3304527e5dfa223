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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nnlab.config import load_config
from nnlab.datasets.bundle import DataBundle, loader_options
from nnlab.datasets.samplers import BatchRequest, EvalBatchSampler, TrainBatchSampler
from nnlab.errors import ConfigError, DataError
from nnlab.store.format import StrokeStore
from nnlab.strokes.augment import StrokeAugment
from nnlab.strokes.drawing import StrokeSource
from nnlab.strokes.render import ENCODINGS, as_batch, render
from nnlab.strokes.sequence import FEATURES, sequence_input
from nnlab.strokes.simplify import to_canvas
from nnlab.strokes.synth import synth_drawings


class StrokeDataset(Dataset):
    """Drawings `indices` of a stroke store, rendered a batch at a time.

    dataset[request] takes a BatchRequest from the samplers below (or a bare array of
    positions) and returns (images, labels, indices) for the whole batch. `augment` is
    applied only when given: pass it for the training split, None for evaluation. With
    `extra_inputs` (data sections: distillation teachers of another input) a fourth item holds
    each one's model input made from the very same augmented drawings.
    """

    def __init__(self, store: StrokeSource, indices: Sequence[int] | np.ndarray | None = None, *,
                 size: int = 64, encoding: str = "time-decay", line_width: float | None = None,
                 antialias: bool = True, padding: float = 0.0,
                 augment: StrokeAugment | None = None, seed: int = 0, max_points: int | None = None,
                 extra_inputs: Sequence[Any] = ()) -> None:
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
        self.max_points = max_points  # set: point sequences (data.input = "sequence") instead of images
        self.channels = ENCODINGS[encoding] if max_points is None else FEATURES
        self.extra_inputs = list(extra_inputs)

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
        batch = to_canvas(batch, "frame")  # raw drawings in Google's frame (time kept), as predict takes them
        if self.augment is not None:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, batch_seed]))
            batch = self.augment(batch, rng)
        if self.max_points is not None:
            x = to_sequence_input(batch, self.max_points)
        else:
            x = to_model_input(batch, size=self.size, encoding=self.encoding, line_width=self.line_width,
                               antialias=self.antialias, padding=self.padding)
        y = torch.from_numpy(np.asarray(self.store.labels)[idx].astype(np.int64))
        if self.extra_inputs:
            return x, y, torch.from_numpy(idx), [drawing_input(batch, data) for data in self.extra_inputs]
        return x, y, torch.from_numpy(idx)


def to_model_input(drawings, size: int, encoding: str, line_width: float | None = None, antialias: bool = True,
                   padding: float = 0.0) -> torch.Tensor:
    """Render and scale to [0, 1]: the one preprocessing of drawings, shared by training,
    prediction, ONNX export and the web demo. Returns float32 (B, C, size, size)."""
    images = render(drawings, size=size, encoding=encoding, line_width=line_width, antialias=antialias,
                    padding=padding)
    # in NumPy, bit-identical to torch's division: a torch op on a served batch of 16 wakes torch's thread pool,
    # whose threads then spin beside onnxruntime (3x the model's CPU time per drawing in benchmarks/serve_load.py)
    return torch.from_numpy(np.divide(images, np.float32(255.0), dtype=np.float32))


def to_sequence_input(drawings, max_points: int) -> torch.Tensor:
    """float32 (B, T, 5) point sequences (`nnlab.strokes.sequence`), the input of stroke-sequence models."""
    return torch.from_numpy(sequence_input(as_batch(drawings), max_points))


def drawing_input(drawings, data) -> torch.Tensor:
    """A run's model input for drawings, from its `data` section: images or point sequences."""
    if data.input == "sequence":
        return to_sequence_input(drawings, data.max_points)
    return to_model_input(drawings, size=data.image_size, encoding=data.encoding, line_width=data.line_width,
                          padding=data.padding)


def input_signature(data) -> dict[str, Any]:
    """What a model trained on the data section `data` takes as input, besides the images' normalisation."""
    sig = {"input": data.input_modality, "image_size": data.image_size, "channels": data.channels}
    if data.input_modality != "images":
        sig |= {k: getattr(data, k) for k in ("encoding", "line_width", "padding", "max_points")}
    return sig


def teacher_inputs(cfg) -> list[Any]:
    """The data sections of `train.distill`'s teachers that take another drawing input than the student
    (in teacher order), for the training batches to carry their input too (`training/distill.py`)."""
    if cfg.train.distill is None or not is_drawing_section(cfg.data):
        return []
    own, extra = input_signature(cfg.data), []
    for path in cfg.train.distill.teachers:
        if not (Path(path) / "config.toml").is_file():
            raise DataError(f"train.distill: {path}: not a run directory (no config.toml)")
        data = load_config(Path(path) / "config.toml", lenient=True).data
        if is_drawing_section(data) and input_signature(data) != own:
            extra.append(data)
    return extra


def is_drawing_section(data) -> bool:
    """Whether a data section holds drawings (rendered or as sequences)."""
    return data.input_modality != "images"


def stroke_input_channels(data) -> int:
    """The model's input channels for drawings: 5 features per point for sequences, else the data section's
    channels (`nnlab.datasets.kinds.input_channels` answers for any kind)."""
    return FEATURES if data.input == "sequence" else data.channels


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
    d = cfg.data
    if d.kind == "synth":
        return StrokeStore.from_drawings(synth_drawings(d.classes or 12, d.per_class, seed=cfg.seed))
    if not d.path:
        raise ConfigError("data.path: the stroke store to read (made by `nnlab data prepare`)")
    return StrokeStore.open(d.path)


def stroke_splits(cfg, store) -> dict[str, np.ndarray]:
    """Store indices per split (by key_id hash, or the source's own split where the store keeps one:
    sketch-rnn's train/valid/test), keeping labelled drawings only (and recognized ones when
    `data.recognized_only`): what training, evaluation and the web demo's samples use."""
    d = cfg.data
    keep = np.asarray(store.labels) >= 0  # unlabelled drawings (test files) cannot be trained on
    if getattr(d, "recognized_only", False):  # a strokes option (synth drawings are all recognized)
        keep &= np.asarray(store.recognized, dtype=bool)
    return {name: idx[keep[idx]] for name, idx in store.split(d.val_fraction, d.test_fraction).items()}


def build_stroke_data(cfg, rank: int = 0, world: int = 1, pin_memory: bool = False):
    """The `strokes` (a store from `nnlab data prepare`) and `synth` (doodles drawn on the fly) kinds:
    split by key_id hash, rendered per batch; ids are key_ids so MAP@3 is keyed by key_id."""
    d = cfg.data
    where = getattr(d, "path", None) or "synth"  # the strokes kind's store, or synthetic doodles
    store = stroke_store(cfg)
    splits = stroke_splits(cfg, store)
    if not len(splits["train"]):
        raise DataError(f"{where}: no labelled drawings in the training split")
    augment = StrokeAugment(flip=d.flip) if d.augment else None
    loaders, ids, labels = {}, {}, {}
    for name, idx in splits.items():
        train = name == "train"
        dataset = StrokeDataset(store, idx, size=d.image_size, encoding=d.encoding, line_width=d.line_width,
                                padding=d.padding, augment=augment if train else None, seed=cfg.seed,
                                max_points=d.max_points if d.input == "sequence" else None,
                                extra_inputs=teacher_inputs(cfg) if train else ())
        loaders[name] = stroke_loader(dataset, d.batch_size if train else (d.eval_batch_size or d.batch_size),
                                      train=train, steps_per_epoch=cfg.train.steps_per_epoch if train else None,
                                      seed=cfg.seed, rank=rank, world_size=world, **loader_options(d, pin_memory))
        ids[name] = np.asarray(store.key_ids)[idx]
        labels[name] = np.asarray(store.labels)[idx].astype(np.int64)
    if d.input == "image" and d.channels != ENCODINGS[d.encoding]:
        raise ConfigError(f"data.channels = {d.channels} but encoding {d.encoding!r} has {ENCODINGS[d.encoding]}")
    return DataBundle(classes=list(store.classes), in_chans=stroke_input_channels(d), image_size=d.image_size,
                      loaders=loaders, ids=ids, labels=labels,
                      info={"sizes": {k: len(v) for k, v in splits.items()}, "store": where,
                            "drawings": store.kind,  # raw drawings are framed, not simplified (runs.trained)
                            "skipped": store.meta.get("skipped", {}),
                            # per class, for the fallback guess of unreadable drawings at prediction time
                            "train_counts": np.bincount(labels["train"], minlength=len(store.classes)).tolist()})
