"""StrokeDataset + batch samplers: whole batches rendered in DataLoader workers, the same
batches whatever the number of workers, reproducible and resumable data order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nnlab.datasets.samplers import EvalBatchSampler, TrainBatchSampler
from nnlab.datasets.strokes import StrokeDataset, stroke_loader
from nnlab.errors import ConfigError
from nnlab.strokes.augment import StrokeAugment
from nnlab.strokes.drawing import StrokeBatch
from nnlab.strokes.render import render


class TinyStore:
    """The duck type StrokeDataset needs: labels, len and batch(indices)."""

    def __init__(self, drawings, labels):
        self.drawings = drawings
        self.labels = np.asarray(labels, dtype=np.int16)
        self.key_ids = np.arange(len(drawings), dtype=np.int64) * 7 + 1000

    def __len__(self):
        return len(self.drawings)

    def batch(self, indices):
        return StrokeBatch.from_drawings([self.drawings[i] for i in np.asarray(indices)])


@pytest.fixture(scope="module")
def store(shared_data) -> TinyStore:
    drawings, labels = [], []
    for label, word in enumerate(["cat", "house", "snowman", "The Eiffel Tower"]):
        with open(shared_data / "quickdraw" / "simplified" / f"{word}.ndjson") as f:
            for line in f:
                rec = json.loads(line)
                drawings.append([np.array(s[:2], dtype=np.uint8).T for s in rec["drawing"]])
                labels.append(label)
    return TinyStore(drawings, labels)


def collect(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [(x.clone(), y.clone(), i.clone()) for x, y, i in loader]


def test_dataset_renders_a_whole_batch(store):
    ds = StrokeDataset(store, np.arange(10, 60), size=32, encoding="time-decay")
    x, y, idx = ds[(np.array([0, 5, 7]), 123)]
    assert x.dtype == torch.float32 and x.shape == (3, 1, 32, 32)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.5  # 0.75 px lines at 32 px
    assert idx.tolist() == [10, 15, 17] and y.dtype == torch.int64
    assert y.tolist() == store.labels[[10, 15, 17]].tolist()
    expected = render(store.batch([10, 15, 17]), size=32, encoding="time-decay")
    assert torch.equal(x, torch.from_numpy(expected).float() / 255)
    # a bare array of positions works too; three-channel encoding gives three channels
    ds3 = StrokeDataset(store, size=24, encoding="order-velocity-time")
    assert ds3[np.array([1, 2])][0].shape == (2, 3, 24, 24)
    with pytest.raises(ConfigError):
        StrokeDataset(store, [len(store)])


def test_augmentation_only_when_asked_and_labels_untouched(store):
    plain = StrokeDataset(store, size=32)
    aug = StrokeDataset(store, size=32, augment=StrokeAugment(stroke_dropout=0.3), seed=5)
    req = (np.arange(0, 100, 3), 42)
    x0, y0, i0 = plain[req]
    x1, y1, i1 = aug[req]
    x2, y2, _ = aug[req]
    assert torch.equal(y0, y1) and torch.equal(i0, i1)  # labels and ids stay
    assert not torch.equal(x0, x1)  # the drawings moved
    assert torch.equal(x1, x2)  # same batch seed, same augmentation
    x3 = aug[(req[0], 43)][0]
    assert not torch.equal(x1, x3)
    assert torch.equal(plain[req][0], x0)  # no augmentation: rendering is deterministic


def test_train_sampler_is_an_endless_reproducible_stream():
    s = TrainBatchSampler(10, batch_size=4, steps_per_epoch=3, seed=1)
    epochs = []
    for e in range(4):
        s.set_epoch(e)
        batches = list(s)
        assert len(batches) == len(s) == 3
        assert all(len(p) == 4 for p, _ in batches)
        epochs.append(np.concatenate([p for p, _ in batches]))
    stream = np.concatenate(epochs)  # 48 items: permutations of range(10), back to back
    for k in range(4):
        assert sorted(stream[10 * k:10 * k + 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    # resuming at epoch 2 with a fresh sampler gives the same batches and seeds
    fresh = TrainBatchSampler(10, batch_size=4, steps_per_epoch=3, seed=1)
    fresh.set_epoch(2)
    s.set_epoch(2)
    for (p, a), (q, b) in zip(fresh, s):
        assert np.array_equal(p, q) and a == b
    other = TrainBatchSampler(10, batch_size=4, steps_per_epoch=3, seed=2)
    assert not np.array_equal(next(iter(other))[0], next(iter(fresh.__class__(10, 4, 3, seed=1)))[0])
    # default steps: one pass over the data
    assert len(TrainBatchSampler(1000, batch_size=64)) == 15


def test_train_sampler_shards_global_batches_across_ranks():
    whole = TrainBatchSampler(50, batch_size=6, steps_per_epoch=4, seed=3, world_size=1)
    ranks = [TrainBatchSampler(50, batch_size=3, steps_per_epoch=4, seed=3, rank=r, world_size=2)
             for r in range(2)]
    for (p, _), (a, _), (b, _) in zip(whole, *ranks):
        assert np.array_equal(p, np.concatenate([a, b]))
    with pytest.raises(ConfigError):
        TrainBatchSampler(50, 3, rank=2, world_size=2)


@pytest.mark.parametrize("n,batch,steps,world", [(101, 5, None, 2), (97, 8, 6, 1), (1000, 7, 13, 3), (64, 4, 8, 2)])
def test_train_sampler_never_repeats_within_an_epoch(n, batch, steps, world):
    ranks = [TrainBatchSampler(n, batch, steps, seed=2, rank=r, world_size=world) for r in range(world)]
    stream = []
    for epoch in range(12):  # epochs spanning the boundary between two permutations included
        for s in ranks:
            s.set_epoch(epoch)
        this = np.concatenate([np.concatenate(step) for step in zip(*[[p for p, _ in s] for s in ranks])])
        assert len(np.unique(this)) == len(this), f"epoch {epoch} repeats an item"
        stream.append(this)
    stream = np.concatenate(stream)
    for k in range(len(stream) // n):  # still one permutation after another
        assert np.array_equal(np.sort(stream[k * n:(k + 1) * n]), np.arange(n))
    fresh = TrainBatchSampler(n, batch, steps, seed=2, rank=0, world_size=world)  # resuming at epoch 9
    fresh.set_epoch(9)
    ranks[0].set_epoch(9)
    assert all(np.array_equal(p, q) for (p, _), (q, _) in zip(fresh, ranks[0]))


def test_eval_sampler_covers_everything_once_in_order():
    s = EvalBatchSampler(10, batch_size=4)
    batches = [p for p, _ in s]
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(s) == 3
    shards = [[p.tolist() for p, _ in EvalBatchSampler(10, 4, rank=r, world_size=2)] for r in range(2)]
    assert shards == [[[0, 2, 4, 6], [8]], [[1, 3, 5, 7], [9]]]  # row-strided, like the image loaders


def test_workers_give_the_same_batches_as_the_main_process(store):
    ds = StrokeDataset(store, np.arange(0, len(store), 2), size=28, encoding="time-decay",
                       augment=StrokeAugment(), seed=11)
    main = stroke_loader(ds, 16, train=True, steps_per_epoch=3, seed=4, num_workers=0)
    workers = stroke_loader(ds, 16, train=True, steps_per_epoch=3, seed=4, num_workers=2)
    for epoch in (0, 1):
        a, b = collect(main, epoch), collect(workers, epoch)
        assert len(a) == len(b) == 3
        for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert not torch.equal(collect(main, 0)[0][2], collect(main, 1)[0][2])
    # evaluation: in order, every drawing once, no augmentation unless asked
    ev = StrokeDataset(store, np.arange(5, 45), size=28)
    loader = DataLoader(ev, batch_size=None, sampler=EvalBatchSampler(len(ev), 16), num_workers=2)
    got = list(loader)
    assert [len(i) for _, _, i in got] == [16, 16, 8]
    assert torch.cat([i for _, _, i in got]).tolist() == list(range(5, 45))
    assert torch.equal(got[0][0], ev[np.arange(16)][0])


def test_real_store_plugs_in(tmp_path, store):
    from nnlab.store.format import StrokeStore
    from nnlab.strokes.drawing import Drawing

    words = ["cat", "house", "snowman", "The Eiffel Tower"]
    drawings = [Drawing(strokes=[s.astype(np.int64) for s in d], word=words[int(lab)], key_id=k)
                for k, (d, lab) in enumerate(zip(store.drawings, store.labels))]
    real = StrokeStore.from_drawings(drawings)
    ds = StrokeDataset(real, size=32, encoding="time-decay")
    x, y, idx = ds[(np.arange(20), 0)]
    assert x.shape == (20, 1, 32, 32)
    assert [real.classes[i] for i in y] == [real.classes[real.labels[i]] for i in idx.tolist()]
    expected = render([d.strokes for d in drawings[:20]], size=32, encoding="time-decay")
    assert torch.equal(x, torch.from_numpy(expected).float() / 255)


@pytest.mark.parametrize("flip", [0.0, 0.5])
def test_data_flip_reaches_the_training_augmentation_only(tmp_path, store, flip):
    from nnlab.config import validate
    from nnlab.datasets.strokes import build_stroke_data
    from nnlab.store.format import StrokeStore
    from nnlab.strokes.drawing import Drawing

    words = ["cat", "house", "snowman", "The Eiffel Tower"]
    StrokeStore.from_drawings([Drawing(strokes=[s.astype(np.int64) for s in d], word=words[int(lab)], key_id=k)
                               for k, (d, lab) in enumerate(zip(store.drawings, store.labels))]).save(tmp_path / "s")
    cfg = validate({"data": {"kind": "strokes", "path": str(tmp_path / "s"), "augment": True, "flip": flip,
                             "image_size": 32}}, "test")
    loaders = build_stroke_data(cfg).loaders
    assert loaders["train"].dataset.augment.flip == flip
    assert loaders["val"].dataset.augment is None
