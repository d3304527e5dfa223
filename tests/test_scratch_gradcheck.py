"""Every backward pass of the NumPy engine against central finite differences (float64).

For a layer f and a fixed random upstream gradient R, the scalar
``L = sum(f(x) * R)`` has dL/d(output) = R, so ``backward(R)`` must return
dL/dx and store dL/dW; both are compared with ``(L(a + h) - L(a - h)) / 2h``
for every entry a of the input and of each parameter.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnlab.scratch import BatchNorm1d, Dense, Dropout, ReLU, Sequential, Sigmoid, Tanh, build_mlp, softmax_cross_entropy

H = 1e-6
TOL = 1e-6


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30))


def numeric_grad(loss_fn, arr: np.ndarray) -> np.ndarray:
    """Central differences of ``loss_fn()`` with respect to ``arr`` (perturbed in place)."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        up = loss_fn()
        flat[i] = old - H
        down = loss_fn()
        flat[i] = old
        gflat[i] = (up - down) / (2 * H)
    return grad


def check_layer(layer, x: np.ndarray, seed: int = 0) -> None:
    r = np.random.default_rng(seed).standard_normal(layer.forward(x).shape)

    def loss() -> float:
        return float(np.sum(layer.forward(x) * r))

    layer.forward(x)
    dx = layer.backward(r)
    analytic = {name: g.copy() for name, g in layer.grads().items()}
    assert rel_error(dx, numeric_grad(loss, x)) < TOL, "input gradient"
    for name, p in layer.params().items():
        err = rel_error(analytic[name], numeric_grad(loss, p))
        assert err < TOL, f"gradient of {name}: relative error {err:.2e}"


def away_from_zero(shape, seed=1) -> np.ndarray:
    """Inputs with |x| >= 0.1, so no finite-difference step crosses ReLU's kink."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def test_dense():
    layer = Dense(5, 4, rng=np.random.default_rng(0), dtype=np.float64)
    layer.bias[:] = np.random.default_rng(3).standard_normal(4)  # nonzero bias too
    check_layer(layer, np.random.default_rng(1).standard_normal((6, 5)))


@pytest.mark.parametrize("cls", [ReLU, Sigmoid, Tanh])
def test_activations(cls):
    check_layer(cls(), away_from_zero((6, 5)))


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(over="raise"):
        y = Sigmoid().forward(np.array([[-1000.0, 0.0, 1000.0]]))
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


def test_batchnorm_train_mode():
    layer = BatchNorm1d(4, dtype=np.float64)
    rng = np.random.default_rng(2)
    layer.weight[:] = rng.uniform(0.5, 2.0, 4)
    layer.bias[:] = rng.standard_normal(4)
    check_layer(layer, rng.standard_normal((7, 4)) * 3 + 1)


def test_batchnorm_eval_mode():
    layer = BatchNorm1d(4, dtype=np.float64)
    rng = np.random.default_rng(2)
    layer.forward(rng.standard_normal((8, 4)))  # some running statistics
    layer.weight[:] = rng.uniform(0.5, 2.0, 4)
    layer.eval()
    check_layer(layer, rng.standard_normal((5, 4)))


def test_dropout_with_fixed_mask():
    layer = Dropout(0.4, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((6, 5))
    keep = np.random.default_rng(2).random(x.shape) >= 0.4
    layer.fix_mask(keep)
    check_layer(layer, x)
    np.testing.assert_allclose(layer.forward(x), np.where(keep, x / 0.6, 0.0))


def test_loss_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    _, grad = softmax_cross_entropy(logits, labels)
    numeric = numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert rel_error(grad, numeric) < TOL


def test_loss_is_stable_and_matches_the_definition():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 2]))
    expected = (0.0 + (np.log(np.exp([1.0, 2.0, 3.0]).sum()) - 3.0)) / 2
    assert np.isfinite(grad).all()
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_whole_network_with_batchnorm_and_fixed_dropout(activation):
    """The chain rule through a full MLP, loss included, for every parameter."""
    model = build_mlp(4, [6, 5], 3, activation=activation, dropout=0.3, seed=0, dtype=np.float64)
    rng = np.random.default_rng(4)
    x, labels = away_from_zero((8, 4), seed=5), rng.integers(0, 3, 8)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.fix_mask(rng.random((8, layer_width(model, layer))) >= 0.3)

    def loss() -> float:
        return softmax_cross_entropy(model.forward(x), labels)[0]

    _, grad = softmax_cross_entropy(model.forward(x), labels)
    dx = model.backward(grad)
    analytic = {name: g.copy() for name, g in model.grads().items()}
    assert rel_error(dx, numeric_grad(loss, x)) < TOL
    for name, p in model.params().items():
        err = rel_error(analytic[name], numeric_grad(loss, p))
        assert err < TOL, f"{name}: relative error {err:.2e}"


def layer_width(model: Sequential, layer) -> int:
    """Features entering ``layer``: the out_features of the last Dense before it."""
    width = None
    for other in model.layers:
        if other is layer:
            return width
        if isinstance(other, Dense):
            width = other.weight.shape[0]
    raise AssertionError("layer not in model")
