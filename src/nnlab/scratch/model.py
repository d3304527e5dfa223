"""The MLP of the NumPy engine, built in the same block order as the torch ``mlp``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnlab.errors import ConfigError
from nnlab.scratch.layers import BatchNorm1d, Dense, Dropout, Layer, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["ACTIVATIONS", "build_mlp"]

#: activation layers by the names a config uses
ACTIVATIONS: dict[str, type[Layer]] = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def build_mlp(in_features: int, hidden: Sequence[int], num_classes: int, activation: str = "relu",
              batchnorm: bool = True, dropout: float = 0.5, seed: int = 0,
              dtype: Any = np.float32) -> Sequential:
    """``[Dense -> activation -> BatchNorm1d -> Dropout] * len(hidden) -> Dense``.

    ``dropout`` is the drop probability; 0 leaves the Dropout layers out. One
    ``seed`` fixes the initial weights and, through an independent stream, the
    dropout masks.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{activation}'; choose one of {sorted(ACTIVATIONS)}")
    init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
    init_rng, dropout_rng = np.random.default_rng(init_seq), np.random.default_rng(dropout_seq)
    layers: list[Layer] = []
    width = in_features
    for h in hidden:
        layers.append(Dense(width, h, rng=init_rng, dtype=dtype))
        layers.append(ACTIVATIONS[activation]())
        if batchnorm:
            layers.append(BatchNorm1d(h, dtype=dtype))
        if dropout > 0:
            layers.append(Dropout(dropout, rng=dropout_rng, dtype=dtype))
        width = h
    layers.append(Dense(width, num_classes, rng=init_rng, dtype=dtype))
    return Sequential(*layers)
