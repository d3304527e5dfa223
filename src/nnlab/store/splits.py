"""Quick, Draw! splits by a hash of each key_id: a drawing's split never changes when data is added."""

from __future__ import annotations

import numpy as np

from nnlab.errors import ConfigError


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised on uint64 (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _salt64(salt: str) -> np.uint64:
    """FNV-1a of the salt's UTF-8 bytes: stable across processes (unlike hash())."""
    h = 0xCBF29CE484222325
    for b in salt.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(h)


def key_id_unit(key_ids: np.ndarray, salt: str = "nnlab") -> np.ndarray:
    """A uniform number in [0, 1) per key_id, fixed by the key_id and the salt alone."""
    keys = np.asarray(key_ids, dtype=np.int64).astype(np.uint64)
    h = _splitmix64(keys ^ _salt64(salt))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def key_id_split(key_ids: np.ndarray, val_fraction: float, test_fraction: float,
                 salt: str = "nnlab") -> dict[str, np.ndarray]:
    """Indices per split from a hash of each key_id (sorted within a split).

    A drawing's split depends on its key_id and the salt only, so it never changes when drawings
    are added or removed; the fractions hold in expectation."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ConfigError(f"data.{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction + test_fraction}")
    u = key_id_unit(key_ids, salt)
    test = u < test_fraction
    val = ~test & (u < test_fraction + val_fraction)
    return {"train": np.flatnonzero(~(test | val)), "val": np.flatnonzero(val), "test": np.flatnonzero(test)}
