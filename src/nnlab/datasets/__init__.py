"""Torch datasets: the data bundle a trainer receives, image and stroke datasets, samplers, splits.

    build_data(cfg) -> DataBundle   loaders per split, with ids and labels in loader order

Image kinds read an `nnlab.ingest.images.ImageSource` and transform it per split (`images`); stroke
kinds read a `nnlab.store.format.StrokeStore` (or synthetic doodles) and render batches (`strokes`).
"""

from nnlab.datasets.build import build_data
from nnlab.datasets.bundle import STROKE_KINDS, DataBundle

__all__ = ["STROKE_KINDS", "DataBundle", "build_data"]
