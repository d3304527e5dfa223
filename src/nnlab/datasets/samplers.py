"""Samplers: which items each step sees, fixed by (seed, epoch) alone, sharded across DDP ranks.

Two families with one API (`set_epoch`, `len`, iteration): `EpochSampler` yields arrays of item
positions, a batch each, for image datasets (`ImageBatches` stacks a batch at once);
`TrainBatchSampler` and `EvalBatchSampler` yield whole batches for the stroke dataset, which
renders a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from nnlab.errors import ConfigError

BatchRequest = tuple[np.ndarray, int]  # (positions into the dataset, seed of the batch)

class EpochSampler(Sampler):
    """Shuffled (train) or sequential (eval) order fixed by (seed, epoch), sharded across DDP ranks.

    The order depends on nothing but the seed and the epoch, so a resumed run sees the
    same batches as an uninterrupted one. With `batch_size` it yields arrays of that many
    positions (the last may be short) instead of one position at a time.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1,
                 batch_size: int | None = None) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.batch_size = batch_size
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
        order = self.order()
        if self.batch_size is None:
            return iter(order.tolist())
        return (order[lo:lo + self.batch_size] for lo in range(0, len(order), self.batch_size))

    def __len__(self) -> int:
        # this rank's share, without drawing the permutation (`order` pads shuffled orders with their head)
        padded = self.size + min((-self.size) % self.world, self.size) if self.shuffle and self.world > 1 else self.size
        n = len(range(self.rank, padded, self.world))
        return n if self.batch_size is None else -(-n // self.batch_size)


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
    is seen once before any is seen twice, the ranks never share an item within a step,
    epochs need not divide the data, and epoch e's batches are known from (seed, e) alone:
    call set_epoch(e) before iterating.

    An epoch that spans the end of one permutation and the start of the next would see the
    items of the old tail twice; the next permutation's head therefore keeps them back (they
    follow right after it), so no item repeats within an epoch as long as an epoch holds at
    most n items (steps_per_epoch * B <= n). Multi-node runs shard the same way: rank and
    world size are the global ones.
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
            # Permutation k depends on the tail of k - 1: start from the newest one known (or 0).
            first = max([j for j in self._perms if j < k], default=-1) + 1
            for j in range(first, k + 1):
                perm = self._shuffled(j)
                if j > 0:
                    perm = self._keep_back(perm, self._perms[j - 1], j)
                if len(self._perms) >= 2:  # an epoch spans at most a few permutations
                    self._perms.pop(min(self._perms))
                self._perms[j] = perm
        return self._perms[k]

    def _shuffled(self, k: int) -> np.ndarray:
        dtype = np.int32 if self.n < 2**31 else np.int64
        perm = np.arange(self.n, dtype=dtype)
        np.random.default_rng(np.random.SeedSequence([self.seed, k])).shuffle(perm)
        return perm

    def _keep_back(self, perm: np.ndarray, previous: np.ndarray, k: int) -> np.ndarray:
        """`perm` with the items of `previous`'s tail that the epoch spanning the boundary already
        takes moved out of its head (stable: the rest keeps its shuffled order)."""
        window = self.steps_per_epoch * self.batch_size * self.world_size
        tail = (k * self.n) % window  # items of `previous` in the epoch that spans the boundary
        if window > self.n or tail == 0:  # epochs longer than the data must repeat; or no epoch spans it
            return perm
        taken = np.zeros(self.n, dtype=bool)
        taken[previous[self.n - tail:]] = True
        free = np.flatnonzero(~taken[perm])[:window - tail]  # the head: the first items not taken yet
        rest = np.ones(self.n, dtype=bool)
        rest[free] = False
        return np.concatenate([perm[free], perm[rest]])

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
