"""Optimisers that follow torch's update rules step for step.

An optimiser keeps references to the model's parameter arrays and updates
them in place from a dict of gradients with the same keys::

    opt = Adam(model.params(), lr=1e-3)
    ...
    model.backward(grad)
    opt.step(model.grads())

``lr`` is a plain attribute, so a schedule may change it between steps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnlab.errors import ConfigError, ModelError

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "OPTIMIZERS"]


class Optimizer:
    """Base class: holds the parameters, the step count and per-parameter state."""

    #: names of the per-parameter state arrays (e.g. Adam's first and second moments)
    slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float) -> None:
        if not lr > 0:
            raise ConfigError(f"learning rate must be positive, got {lr}")
        self.params = dict(params)
        self.lr = float(lr)
        self.t = 0  # steps taken; Adam's bias correction needs it
        self.state = {slot: {name: np.zeros_like(p) for name, p in self.params.items()}
                      for slot in self.slots}
        # one scratch array per parameter: the updates run without temporaries
        self._tmp = {name: np.empty_like(p) for name, p in self.params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update every parameter in place from its gradient."""
        self.t += 1
        for name, p in self.params.items():
            self._update(name, p, grads[name], self._tmp[name])

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        raise NotImplementedError

    def hyperparams(self) -> dict[str, Any]:
        """The constructor's keyword arguments (saved with a checkpoint)."""
        return {"lr": self.lr}

    def state_dict(self) -> dict[str, np.ndarray]:
        """State arrays by ``"<slot>/<param>"`` plus the step count, for checkpoints."""
        out = {f"{slot}/{name}": arr for slot, arrs in self.state.items()
               for name, arr in arrs.items()}
        out["t"] = np.array(self.t, dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (shapes must match)."""
        for slot, arrs in self.state.items():
            for name, arr in arrs.items():
                key = f"{slot}/{name}"
                if key not in state:
                    raise ModelError(f"optimizer state has no '{key}'")
                if state[key].shape != arr.shape:
                    raise ModelError(f"optimizer state '{key}' has shape {state[key].shape}, "
                                     f"the parameter has {arr.shape}")
                arr[...] = state[key]
        self.t = int(state["t"])


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (torch.optim.SGD, dampening 0).

    ``v = momentum * v + g``; the step is ``v`` (or ``g + momentum * v`` with
    Nesterov); ``weight_decay`` adds ``weight_decay * p`` to the gradient first.
    """

    slots = ("momentum_buffer",)

    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        if nesterov and momentum <= 0:
            raise ConfigError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        super().__init__(params, lr)

    def hyperparams(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            v = self.state["momentum_buffer"][name]
            v *= self.momentum  # v starts at 0, so the first step gives v = g like torch
            v += g
            if self.nesterov:
                np.multiply(v, self.momentum, out=tmp)
                tmp += g
                g = tmp
            else:
                g = v
        np.multiply(g, self.lr, out=tmp)
        p -= tmp


class Adam(Optimizer):
    """Adam with bias correction (torch.optim.Adam).

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, then
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. Without the
    bias correction the first steps are far too small (m and v start at 0).
    ``weight_decay`` here is L2 (added to the gradient); see :class:`AdamW`.
    """

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), eps, weight_decay
        super().__init__(params, lr)

    def hyperparams(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _decay(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g + self.weight_decay * p if self.weight_decay else g

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        b1, b2 = self.betas
        g = self._decay(p, g)
        m = self.state["exp_avg"][name]
        v = self.state["exp_avg_sq"][name]
        # m += (1 - b1) (g - m)  is  b1 m + (1 - b1) g  (torch's lerp)
        np.subtract(g, m, out=tmp)
        tmp *= 1 - b1
        m += tmp
        # v = b2 v + (1 - b2) g^2
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        step_size = self.lr / (1 - b1 ** self.t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1 - b2 ** self.t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): ``p *= 1 - lr * wd`` first."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay
        return g


#: optimiser classes by the names a config uses
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
