"""Saving and loading NumPy-engine models: .npz without pickle, plus a JSON architecture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnlab.errors import ModelError
from nnlab.scratch import (
    Adam,
    build_mlp,
    fit_epoch,
    load_model,
    load_weights,
    predict_proba,
    read_header,
    save_model,
    softmax_cross_entropy,
)


@pytest.fixture()
def trained(tmp_path):
    """A small model after one epoch on random data (so the running statistics moved)."""
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 20), dtype=np.float32), rng.integers(0, 4, 300)
    model = build_mlp(20, [16, 8], 4, dropout=0.5, seed=1)
    opt = Adam(model.params(), lr=1e-2)
    fit_epoch(model, softmax_cross_entropy, opt, X, y, 32, rng)
    return model, opt, X


def test_round_trip_gives_equal_outputs(tmp_path, trained):
    model, opt, X = trained
    path = save_model(tmp_path / "m.npz", model, optimizer=opt, meta={"epoch": 1, "classes": ["a b"]})
    loaded = load_model(path)
    np.testing.assert_array_equal(predict_proba(loaded, X), predict_proba(model, X))
    assert loaded.architecture() == model.architecture()
    assert loaded.dtype == np.float32
    assert read_header(path)["meta"] == {"epoch": 1, "classes": ["a b"]}


def test_file_opens_without_pickle_and_holds_a_json_architecture(tmp_path, trained):
    model, opt, _ = trained
    path = save_model(tmp_path / "m.npz", model, optimizer=opt)
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
        header = json.loads(str(npz["architecture"]))
        np.testing.assert_array_equal(npz["2.running_mean"], model.layers[2].running_mean)
    assert header["layers"][0] == {"type": "Dense", "in_features": 20, "out_features": 16}
    assert header["optimizer"]["type"] == "Adam"
    assert not list(tmp_path.glob("*.tmp")), "the temporary file was left behind"


def test_load_weights_restores_the_optimizer_state(tmp_path, trained):
    model, opt, X = trained
    path = save_model(tmp_path / "m.npz", model, optimizer=opt, meta={"epoch": 3})
    fresh = build_mlp(20, [16, 8], 4, dropout=0.5, seed=99)
    fresh_opt = Adam(fresh.params(), lr=1e-2)
    assert load_weights(fresh, path, optimizer=fresh_opt) == {"epoch": 3}
    assert fresh_opt.t == opt.t
    for key, arr in opt.state_dict().items():
        np.testing.assert_array_equal(fresh_opt.state_dict()[key], arr)
    np.testing.assert_array_equal(predict_proba(fresh, X), predict_proba(model, X))


def test_float64_copy_of_a_float32_model(tmp_path, trained):
    model, _, X = trained
    loaded = load_model(save_model(tmp_path / "m.npz", model), dtype=np.float64)
    assert loaded.dtype == np.float64
    np.testing.assert_allclose(predict_proba(loaded, X), predict_proba(model, X), atol=1e-5)


def test_mismatched_width_names_the_layer(tmp_path, trained):
    model, _, _ = trained
    path = save_model(tmp_path / "m.npz", model)
    other = build_mlp(20, [32, 8], 4, dropout=0.5)
    with pytest.raises(ModelError, match=r"layer 0 is Dense\(in_features=20, out_features=16\) in the "
                                         r"file but Dense\(in_features=20, out_features=32\)"):
        load_weights(other, path)


def test_mismatched_depth_and_blocks(tmp_path, trained):
    model, _, _ = trained
    path = save_model(tmp_path / "m.npz", model)
    with pytest.raises(ModelError, match="layer 2 is BatchNorm1d"):
        load_weights(build_mlp(20, [16, 8], 4, batchnorm=False), path)
    with pytest.raises(ModelError, match="the file has 9 layers, the model 13"):
        load_weights(build_mlp(20, [16, 8, 8], 4, dropout=0.5), path)


def test_array_shape_that_contradicts_the_header(tmp_path, trained):
    model, _, _ = trained
    path = save_model(tmp_path / "m.npz", model)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["4.weight"] = np.zeros((8, 15), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelError, match=r"'4.weight' has shape \(8, 15\) in the file, the model "
                                         r"expects \(8, 16\)"):
        load_model(tmp_path / "bad.npz")


def test_files_that_are_not_models(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable .npz"):
        load_model(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", w=np.zeros(3))
    with pytest.raises(ModelError, match="no 'architecture' entry"):
        load_model(tmp_path / "plain.npz")
