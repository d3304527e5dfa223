"""The data-kind registry: every kind registered with its modality, unknown kinds named with a hint,
and a kind registered in one place is what build_data, the model input and the drawing checks follow."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from nnlab.config import DrawingData, ImageData, unregister_data_section, validate
from nnlab.datasets import build_data
from nnlab.datasets.bundle import DataBundle
from nnlab.datasets.kinds import (
    KINDS,
    DataKind,
    data_kind,
    drawing_kinds,
    example_input_shape,
    input_channels,
    is_drawings,
    model_input,
    register_kind,
    takes_sequences,
)
from nnlab.errors import ConfigError
from nnlab.ingest.image_kinds import LOADERS
from nnlab.ingest.images import ImageSource

MODALITY = {"digits": "images", "idx": "images", "npz": "images", "folder": "images", "bitmap": "images",
            "csv": "images", "strokes": "drawings", "synth": "drawings"}


def test_every_kind_is_registered_with_its_modality():
    assert {name: kind.modality for name, kind in KINDS.items()} == MODALITY
    assert drawing_kinds() == ["strokes", "synth"]
    assert all(KINDS[name].source is LOADERS[name] for name, m in MODALITY.items() if m == "images")
    assert all(issubclass(kind.config_class, BaseModel) and "kind" in kind.config_class.model_fields
               for kind in KINDS.values())


def test_queries_take_a_name_a_config_or_its_data_section():
    cfg = validate({"data": {"kind": "synth", "input": "sequence"}})
    assert data_kind("npz").name == "npz" and data_kind(cfg) is data_kind(cfg.data) is KINDS["synth"]
    assert is_drawings(cfg) and is_drawings("strokes") and not is_drawings("digits")
    assert takes_sequences(cfg) and not takes_sequences(validate({"data": {"kind": "synth"}}))
    # data.input means nothing for images: the schema refuses it, and an image run never reads sequences
    assert not takes_sequences(validate({"data": {"kind": "digits"}}))
    with pytest.raises(ConfigError, match="data.input: not an option of kind 'digits'"):
        validate({"data": {"kind": "digits", "input": "sequence"}})


def test_model_input_and_shapes_follow_the_kind():
    sequences = validate({"data": {"kind": "synth", "input": "sequence", "max_points": 32}}).data
    assert input_channels(sequences) == 5 and example_input_shape(sequences) == (1, 32, 5)
    images = validate({"data": {"kind": "digits", "image_size": 8, "mean": 0.0, "std": 1.0}}).data
    assert input_channels(images) == 1 and example_input_shape(images) == (1, 1, 8, 8)
    x = model_input([np.full((8, 8), 255, np.uint8), np.zeros((8, 8), np.uint8)], images)
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    assert x[0].min().item() == pytest.approx(1.0) and x[1].max().item() == 0.0
    drawings = validate({"data": {"kind": "synth", "image_size": 16, "encoding": "order-stroke-time",
                                  "channels": 3}}).data
    square = [np.array([[0, 0], [255, 0], [255, 255], [0, 255], [0, 0]])]
    rendered = model_input([square], drawings)
    assert rendered.shape == (1, 3, 16, 16) and 0 < rendered.max().item() <= 1
    assert model_input([square], sequences).shape == (1, 5, 5)  # the square's 5 points, one per row


def test_an_unknown_kind_is_one_config_error_with_the_closest_kind():
    with pytest.raises(ConfigError, match=r"data\.kind: unknown kind 'npzz'; did you mean 'npz'\? \(known: "):
        data_kind("npzz")
    with pytest.raises(ConfigError, match="did you mean 'strokes'"):
        build_data(validate({"data": {"kind": "stroke"}}))
    with pytest.raises(ConfigError, match="modality must be 'images' or 'drawings'"):
        register_kind(DataKind("sounds", "audio", build_data, model_input, "not a modality"))
    assert "sounds" not in KINDS


@pytest.fixture
def fake_kinds():
    """Registered kinds removed again after the test (the registry and the image loaders are global)."""
    added = []
    yield added
    for name in added:
        KINDS.pop(name, None)
        LOADERS.pop(name, None)
        unregister_data_section(name)


def test_a_kind_with_its_own_builder_is_what_build_data_uses(fake_kinds):
    seen = {}

    def build_constant(cfg, run_dir=None, rank=0, world=1, pin_memory=False) -> DataBundle:
        seen.update(kind=cfg.data.kind, rank=rank, world=world)
        return DataBundle(classes=["a", "b"], in_chans=1, image_size=cfg.data.image_size, loaders={})

    class ConstantData(DrawingData):
        kind: Literal["constant"] = "constant"

    fake_kinds.append("constant")
    register_kind(DataKind("constant", "drawings", build_constant, model_input, "a test kind"), ConstantData)
    bundle = build_data(validate({"data": {"kind": "constant", "image_size": 12}}), rank=1, world=2)
    assert bundle.classes == ["a", "b"] and bundle.image_size == 12
    assert seen == {"kind": "constant", "rank": 1, "world": 2}
    assert is_drawings("constant") and "constant" in drawing_kinds()


def test_an_image_kind_needs_only_its_reader(fake_kinds):
    """A new image format: one entry with its reader; splitting, transforms and loaders are the image kinds'."""
    def load_checkerboards(per_class: int = 1) -> ImageSource:
        board = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
        images = np.stack([board] * per_class + [255 - board] * per_class)
        return ImageSource(images=images, labels=np.repeat([0, 1], per_class), classes=["even", "odd"])

    class CheckersData(ImageData):
        kind: Literal["checkers"] = "checkers"
        per_class: int = 1

    fake_kinds.append("checkers")
    image_kind = KINDS["npz"]
    register_kind(DataKind("checkers", "images", image_kind.build, image_kind.model_input, "two checkerboards",
                           source=load_checkerboards), CheckersData)
    cfg = validate({"data": {"kind": "checkers", "image_size": 8, "val_fraction": 0.25, "test_fraction": 0.25,
                             "batch_size": 4, "per_class": 6}})  # the reader's option, from the data section
    bundle = build_data(cfg)
    assert bundle.classes == ["even", "odd"]
    assert sum(len(v) for v in bundle.labels.values()) == 12 and bundle.has("train")
    x, y = next(iter(bundle.loaders["train"]))
    assert x.shape[1:] == (1, 8, 8) and set(y.tolist()) <= {0, 1}
    assert not is_drawings(cfg)
