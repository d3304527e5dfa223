"""Data: image data sets, Quick, Draw! strokes (readers, store, simplification, synthetic doodles),
splits, and the torch loaders built from them (`nnlab.data.loaders`).

The loader names are resolved lazily, so that reading and preparing stroke data (`nnlab data ...`,
and its worker processes) never imports torch.
"""

from __future__ import annotations

from typing import Any

_LOADERS = ("DataBundle", "EpochSampler", "STROKE_KINDS", "build_data", "build_image_data", "image_splits",
            "load_image_source")


def __getattr__(name: str) -> Any:
    if name in _LOADERS:
        from nnlab.data import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'nnlab.data' has no attribute {name!r}")
