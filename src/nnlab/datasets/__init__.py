"""Torch datasets: the data bundle a trainer receives, image and stroke datasets, samplers, splits.

    build_data(cfg) -> DataBundle   loaders per split, with ids and labels in loader order
    data_kind(cfg) -> DataKind      the registry entry of data.kind: images or drawings, builder, input

Image kinds read an `nnlab.ingest.images.ImageSource` and transform it per split (`images`); stroke
kinds read a `nnlab.store.format.StrokeStore` (or synthetic doodles) and render batches (`strokes`).
"""

from nnlab.datasets.build import build_data
from nnlab.datasets.bundle import DataBundle
from nnlab.datasets.kinds import DataKind, data_kind, is_drawings, register_kind

__all__ = ["DataBundle", "DataKind", "build_data", "data_kind", "is_drawings", "register_kind"]
