"""fit_epoch / predict_proba: the NumPy engine learns real digits, reproducibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from nnlab.errors import ConfigError, DataError, TrainingError
from nnlab.scratch import SGD, Adam, AdamW, build_mlp, fit_epoch, predict_proba, softmax_cross_entropy


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small matrices: a second BLAS thread only spins, and badly so on a busy machine."""
    with threadpool_limits(1):
        yield


def optdigits(shared_data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = shared_data / "digits" / "uci-optdigits" / f"optdigits.{split}"
    header = not path.read_text().split(",", 1)[0].strip().isdigit()  # "Block 1,..." or data
    data = np.loadtxt(path, delimiter=",", skiprows=int(header), dtype=np.int64)
    return (data[:, :-1] / 16.0).astype(np.float32), data[:, -1]


def train(X, y, epochs, opt_cls=Adam, seed=0, **opt_kwargs):
    model = build_mlp(X.shape[1], [128, 64], 10, dropout=0.2, seed=seed)
    opt = opt_cls(model.params(), **opt_kwargs)
    rng = np.random.default_rng(seed)
    history = [fit_epoch(model, softmax_cross_entropy, opt, X, y, 64, rng) for _ in range(epochs)]
    return model, history


@pytest.mark.parametrize("opt_cls, kwargs", [(Adam, {"lr": 3e-3}), (AdamW, {"lr": 3e-3}),
                                             (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True})])
def test_learns_uci_digits(shared_data, opt_cls, kwargs):
    X, y = optdigits(shared_data, "tra")
    Xt, yt = optdigits(shared_data, "tes")
    model, history = train(X, y, 8, opt_cls, **kwargs)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["samples"] == len(X)
    accuracy = (predict_proba(model, Xt).argmax(axis=1) == yt).mean()
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f}"


def test_same_seed_same_run_bit_for_bit():
    rng = np.random.default_rng(5)
    X, y = rng.random((200, 12), dtype=np.float32), rng.integers(0, 10, 200)
    a, ha = train(X, y, 2, lr=1e-2)
    b, hb = train(X, y, 2, lr=1e-2)
    c, _ = train(X, y, 2, seed=1, lr=1e-2)
    assert ha == hb
    for (name, pa), pb, pc in zip(a.params().items(), b.params().values(), c.params().values()):
        np.testing.assert_array_equal(pa, pb, err_msg=name)
    assert not np.array_equal(a.params()["0.weight"], c.params()["0.weight"])


def test_inputs_in_another_dtype_are_cast():
    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 256, (100, 8)).astype(np.uint8), rng.integers(0, 3, 100)
    model = build_mlp(8, [8], 3, seed=0)
    opt = Adam(model.params())
    fit_epoch(model, softmax_cross_entropy, opt, X, y, 16, rng)
    # float32 all the way: no silent float64 upcast in any layer or update
    arrays = {**model.state_dict(), **model.grads(), **opt.state_dict()}
    assert {name: a.dtype for name, a in arrays.items() if name != "t"} == {
        name: np.dtype(np.float32) for name in arrays if name != "t"}
    assert predict_proba(model, X).dtype == np.float32


def test_divergence_is_reported():
    rng = np.random.default_rng(0)
    X, y = rng.random((256, 8), dtype=np.float32), rng.integers(0, 3, 256)
    model = build_mlp(8, [16], 3, batchnorm=False, dropout=0.0, seed=0)
    opt = SGD(model.params(), lr=1e38)  # the float32 weights overflow to inf, then NaN
    with pytest.raises(TrainingError, match="lower the learning rate"), np.errstate(all="ignore"):
        for _ in range(5):
            fit_epoch(model, softmax_cross_entropy, opt, X, y, 32, rng)


def test_bad_inputs_and_settings():
    model = build_mlp(4, [4], 2)
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="2-D"):
        fit_epoch(model, softmax_cross_entropy, Adam(model.params()), np.zeros((3, 2, 2)),
                  np.zeros(3, int), 2, rng)
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        fit_epoch(model, softmax_cross_entropy, Adam(model.params()), np.zeros((4, 4)),
                  np.array([0, 1, 2, 0]), 4, rng)
    with pytest.raises(ConfigError, match="unknown activation 'gelu'"):
        build_mlp(4, [4], 2, activation="gelu")
    with pytest.raises(ConfigError, match="learning rate must be positive"):
        Adam(model.params(), lr=0)
