"""train() / eval(): dropout and batch normalisation really change behaviour.

The reference notebook evaluated with dropout on and batch statistics; these
tests pin down that evaluation here is deterministic, per-sample and uses the
running statistics, with torch's update rule for them.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnlab.errors import ModelError, TrainingError
from nnlab.scratch import BatchNorm1d, Dropout, build_mlp, predict_proba


def test_eval_mode_disables_dropout_and_uses_running_statistics():
    rng = np.random.default_rng(0)
    model = build_mlp(10, [32, 16], 3, dropout=0.5, seed=0)
    for _ in range(5):  # move the running statistics away from (0, 1)
        model.forward(rng.standard_normal((64, 10), dtype=np.float32) * 2 + 1)
    X = rng.standard_normal((20, 10), dtype=np.float32)

    train_a, train_b = model.forward(X), model.forward(X)
    assert not np.allclose(train_a, train_b), "training mode should sample new dropout masks"

    model.eval()
    full = model.forward(X)
    np.testing.assert_array_equal(full, model.forward(X))  # deterministic
    one_by_one = np.concatenate([model.forward(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, full, rtol=1e-6, atol=1e-6)  # no batch dependence

    # the same numbers by hand: running statistics, no dropout
    h = X
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            h = h @ layer.weight.T + layer.bias
        elif kind == "ReLU":
            h = np.maximum(h, 0)
        elif kind == "BatchNorm1d":
            h = (h - layer.running_mean) / np.sqrt(layer.running_var + layer.eps) * layer.weight + layer.bias
    np.testing.assert_allclose(full, h, rtol=1e-5, atol=1e-5)


def test_predict_proba_evaluates_and_restores_the_mode():
    model = build_mlp(6, [8], 3, dropout=0.5, seed=0)
    X = np.random.default_rng(0).random((10, 6), dtype=np.float32)
    p1, p2 = predict_proba(model, X, batch_size=3), predict_proba(model, X, batch_size=7)
    np.testing.assert_allclose(p1, p2, rtol=1e-6)
    np.testing.assert_allclose(p1.sum(axis=1), 1, rtol=1e-6)
    assert model.training and all(layer.training for layer in model.layers)
    model.eval()
    predict_proba(model, X)
    assert not model.training


def test_dropout_drops_with_probability_p_and_keeps_the_mean():
    layer = Dropout(0.3, rng=np.random.default_rng(0))
    x = np.ones((400, 500), dtype=np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert (y == 0).mean() == pytest.approx(0.3, abs=0.01)
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    np.testing.assert_array_equal(layer.backward(x), y)  # the same mask on the way back
    layer.eval()
    assert layer.forward(x) is x


def test_batchnorm_running_statistics_follow_torch():
    torch = pytest.importorskip("torch")
    ours = BatchNorm1d(5, momentum=0.2, dtype=np.float64)
    theirs = torch.nn.BatchNorm1d(5, momentum=0.2).double()
    rng = np.random.default_rng(0)
    for n in (8, 3, 16):  # different batch sizes: the unbiased n / (n - 1) factor matters
        x = rng.standard_normal((n, 5)) * 3 + 2
        np.testing.assert_allclose(ours.forward(x), theirs(torch.from_numpy(x)).detach().numpy(),
                                   atol=1e-12)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), atol=1e-12)
    ours.eval(), theirs.eval()
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(ours.forward(x), theirs(torch.from_numpy(x)).detach().numpy(), atol=1e-12)


def test_batchnorm_refuses_a_batch_of_one_in_training():
    with pytest.raises(TrainingError, match="at least 2 samples"):
        BatchNorm1d(3).forward(np.ones((1, 3), np.float32))


def test_invalid_dropout_probability():
    with pytest.raises(ModelError, match=r"\[0, 1\)"):
        Dropout(1.0)
