"""Layers of the NumPy engine, each with a hand-written forward and backward pass.

The contract every layer keeps:

* ``forward(x)`` computes the output and caches what the backward pass needs.
* ``backward(grad)`` takes dL/d(output), stores dL/d(parameter) for every
  parameter (overwriting, never accumulating, so there is no ``zero_grad``) and
  returns dL/d(input).
* ``params()`` / ``grads()`` return dicts name -> array with the same keys; the
  arrays are the layer's own (an optimiser updates ``params()`` in place).
* ``train()`` / ``eval()`` switch Dropout and BatchNorm1d between their
  training behaviour and their inference behaviour.

Inputs are 2-D arrays ``(batch, features)``. Parameters follow torch's layout
and names (``Dense.weight`` is ``(out, in)`` like ``nn.Linear``, BatchNorm's
gamma/beta are ``weight``/``bias``), so weights copy across engines as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnlab.errors import ModelError, TrainingError

__all__ = ["Layer", "Dense", "ReLU", "Sigmoid", "Tanh", "BatchNorm1d", "Dropout", "Sequential",
           "LAYER_TYPES"]


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Layer:
    """Base class: a layer without parameters whose forward is the identity."""

    training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for input ``x``; caches what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """dL/d(input) from dL/d(output); stores the parameter gradients."""
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays by name (the layer's own arrays, updated in place)."""
        return {}

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the last backward pass, same keys as :meth:`params`."""
        return {}

    def buffers(self) -> dict[str, np.ndarray]:
        """State that is saved with the model but not trained (running statistics)."""
        return {}

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (the JSON architecture)."""
        return {}

    def train(self, mode: bool = True) -> Layer:
        """Training behaviour (dropout on, batch statistics); returns self."""
        self.training = mode
        return self

    def eval(self) -> Layer:
        """Inference behaviour (dropout off, running statistics); returns self."""
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer ``y = x @ W.T + b`` with He initialisation.

    He (Kaiming) normal init, ``W ~ N(0, 2 / in_features)``, keeps the variance
    of the activations roughly constant through ReLU layers; biases start at 0.
    Weights are drawn in float64 and then rounded, so a float32 and a float64
    model built from the same seed hold the same numbers.
    """

    def __init__(self, in_features: int, out_features: int, *,
                 rng: np.random.Generator | int | None = None, dtype: Any = np.float32) -> None:
        if in_features < 1 or out_features < 1:
            raise ModelError(f"Dense({in_features}, {out_features}): sizes must be positive")
        std = np.sqrt(2.0 / in_features)
        w = _as_generator(rng).standard_normal((out_features, in_features)) * std
        self.weight = w.astype(dtype)
        self.bias = np.zeros(out_features, dtype=dtype)
        self.grad_weight = np.zeros_like(self.weight)
        self.grad_bias = np.zeros_like(self.bias)
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        out = x @ self.weight.T  # W.T is a view: BLAS reads it transposed, no copy
        out += self.bias
        return out

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """As :meth:`Layer.backward`; ``need_input_grad=False`` skips dL/dx (first layer)."""
        np.matmul(grad.T, self._x, out=self.grad_weight)  # dL/dW = grad.T @ x
        np.sum(grad, axis=0, out=self.grad_bias)  # dL/db = column sums of grad
        return grad @ self.weight if need_input_grad else None  # dL/dx = grad @ W

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def grads(self) -> dict[str, np.ndarray]:
        return {"weight": self.grad_weight, "bias": self.grad_bias}

    def config(self) -> dict[str, Any]:
        return {"in_features": self.weight.shape[1], "out_features": self.weight.shape[0]}


class ReLU(Layer):
    """``max(x, 0)``; the gradient passes where the input was positive."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        return np.maximum(x, 0)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return np.where(self._positive, grad, 0)


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        self._y = y
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._y * (1 - self._y)  # sigmoid' = y (1 - y)


class Tanh(Layer):
    """Hyperbolic tangent."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * (1 - self._y * self._y)  # tanh' = 1 - y^2


class BatchNorm1d(Layer):
    """Batch normalisation over the batch axis, with torch's semantics.

    Training: normalise with the batch mean and the biased batch variance, and
    update ``running = (1 - momentum) * running + momentum * batch`` using the
    *unbiased* variance (n / (n - 1)), as ``torch.nn.BatchNorm1d`` does.
    Evaluation: normalise with the running statistics, so a prediction does not
    depend on the other samples in its batch.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 dtype: Any = np.float32) -> None:
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = np.ones(num_features, dtype=dtype)  # gamma
        self.bias = np.zeros(num_features, dtype=dtype)  # beta
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self.grad_weight = np.zeros_like(self.weight)
        self.grad_bias = np.zeros_like(self.bias)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            self._inv_std = 1 / np.sqrt(self.running_var + self.eps)
            self._xhat = x - self.running_mean
            self._xhat *= self._inv_std
            return self._scale_shift()
        n = x.shape[0]
        if n < 2:
            raise TrainingError("BatchNorm1d needs at least 2 samples per batch in training mode "
                                "(a batch of one has no variance); use a larger batch size")
        mean = x.mean(axis=0)
        xc = x - mean
        var = np.einsum("ij,ij->j", xc, xc) / n  # biased variance, used to normalise
        inv_std = 1 / np.sqrt(var + self.eps)
        xc *= inv_std  # xc is ours: normalise it in place
        self._xhat, self._inv_std = xc, inv_std
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += (m * n / (n - 1)) * var  # unbiased, like torch
        return self._scale_shift()

    def _scale_shift(self) -> np.ndarray:
        out = self._xhat * self.weight  # gamma * xhat + beta
        out += self.bias
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        xhat, n = self._xhat, grad.shape[0]
        np.einsum("ij,ij->j", grad, xhat, out=self.grad_weight)
        np.sum(grad, axis=0, out=self.grad_bias)
        if not self.training:  # the running statistics are constants here
            return grad * (self.weight * self._inv_std)
        # dL/dx = gamma / (n std) * (n g - sum(g) - xhat * sum(g * xhat)), the mean
        # and the variance both depend on every sample of the batch.
        dx = grad * n
        dx -= self.grad_bias
        dx -= xhat * self.grad_weight
        dx *= self.weight * self._inv_std / n
        return dx

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def grads(self) -> dict[str, np.ndarray]:
        return {"weight": self.grad_weight, "bias": self.grad_bias}

    def buffers(self) -> dict[str, np.ndarray]:
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def config(self) -> dict[str, Any]:
        return {"num_features": self.weight.shape[0], "eps": self.eps, "momentum": self.momentum}


class Dropout(Layer):
    """Inverted dropout: zero each input with probability ``p``, scale the rest by 1/(1-p).

    The scaling happens at training time, so evaluation is the identity.
    ``fix_mask(keep)`` makes every following forward use the given keep mask
    (boolean, the input's shape) instead of a random one: for gradient checks.
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None,
                 dtype: Any = np.float32) -> None:
        if not 0 <= p < 1:
            raise ModelError(f"Dropout p={p}: the drop probability must be in [0, 1)")
        self.p = float(p)
        self.rng = _as_generator(rng)
        self.dtype = np.dtype(dtype)
        self._fixed: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def fix_mask(self, keep: np.ndarray | None) -> None:
        """Use this boolean keep mask on every forward from now on (``None``: random again)."""
        self._fixed = None if keep is None else np.asarray(keep, dtype=bool)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0:
            self._mask = None
            return x
        if self._fixed is not None:
            keep = self._fixed
        else:
            keep = self.rng.random(x.shape, dtype=self.dtype) >= self.p
        # The mask holds 0 or 1/(1-p): one multiply in forward and in backward.
        self._mask = np.multiply(keep, self.dtype.type(1 / (1 - self.p)), dtype=self.dtype)
        return x * self._mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad if self._mask is None else grad * self._mask

    def config(self) -> dict[str, Any]:
        return {"p": self.p}


class Sequential(Layer):
    """Layers applied in order; parameters are named ``"<index>.<name>"`` like torch's."""

    def __init__(self, *layers: Layer) -> None:
        self.layers = list(layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backward through all layers; ``need_input_grad=False`` spares the first
        Dense layer its input gradient, which training never uses."""
        for layer in reversed(self.layers[1:]):
            grad = layer.backward(grad)
        first = self.layers[0]
        if not need_input_grad and isinstance(first, Dense):
            return first.backward(grad, need_input_grad=False)
        return first.backward(grad)

    def _named(self, what: str) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": arr for i, layer in enumerate(self.layers)
                for name, arr in getattr(layer, what)().items()}

    def params(self) -> dict[str, np.ndarray]:
        return self._named("params")

    def grads(self) -> dict[str, np.ndarray]:
        return self._named("grads")

    def buffers(self) -> dict[str, np.ndarray]:
        return self._named("buffers")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by name, as in ``torch.nn.Sequential.state_dict()``."""
        return {**self.params(), **self.buffers()}

    def train(self, mode: bool = True) -> Sequential:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype (inputs are cast to it by the trainer)."""
        for arr in self.params().values():
            return arr.dtype
        return np.dtype(np.float32)

    def architecture(self) -> list[dict[str, Any]]:
        """One ``{"type": ..., **config}`` dict per layer: what the JSON architecture holds."""
        return [{"type": type(layer).__name__, **layer.config()} for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


# Layer classes by name, to rebuild a model from its JSON architecture.
LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (Dense, ReLU, Sigmoid, Tanh, BatchNorm1d, Dropout)}
