"""The training loop of the NumPy engine: one epoch of mini-batches, and inference.

No files, no prints: the caller decides what to log and where to save.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnlab.errors import DataError, TrainingError
from nnlab.scratch.layers import Sequential
from nnlab.scratch.losses import softmax
from nnlab.scratch.optim import Optimizer

__all__ = ["LossFn", "fit_epoch", "predict_logits", "predict_proba", "steps_per_epoch"]

#: ``loss(logits, labels) -> (mean loss, dL/dlogits)``, e.g. ``softmax_cross_entropy``
LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def _check_xy(X: np.ndarray, y: np.ndarray | None = None) -> None:
    if X.ndim != 2:
        raise DataError(f"inputs must be 2-D (samples, features), got shape {X.shape}; "
                        "flatten images first")
    if y is not None and y.shape != (X.shape[0],):
        raise DataError(f"{X.shape[0]} inputs but labels of shape {y.shape}")


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """The optimiser steps :func:`fit_epoch` takes: one per batch, a trailing batch of one sample skipped."""
    return samples // batch_size + (1 if samples % batch_size >= 2 else 0)


def fit_epoch(model: Sequential, loss: LossFn, optimizer: Optimizer, X: np.ndarray, y: np.ndarray,
              batch_size: int, rng: np.random.Generator,
              after_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """Train ``model`` for one pass over ``X, y`` in shuffled mini-batches.

    ``rng`` shuffles the samples. Inputs are cast to the model's dtype batch by
    batch, so ``X`` may stay in a compact dtype. A trailing batch of a single
    sample is skipped (batch normalisation needs two). ``after_step`` is called
    with the number of steps taken so far this epoch after each optimiser step
    (a learning-rate schedule sets the next step's rate there). Returns the
    epoch's mean ``loss`` and ``accuracy`` over the samples trained on, and
    ``samples``. Raises :class:`TrainingError` when the loss stops being finite.
    """
    _check_xy(X, y)
    model.train()
    n = X.shape[0]
    order = rng.permutation(n)
    xb_buf = np.empty((batch_size, X.shape[1]), dtype=model.dtype)  # reused for every full batch
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:
            break
        xb = xb_buf[:len(idx)]
        if X.dtype == xb.dtype:
            np.take(X, idx, axis=0, out=xb)  # gather straight into the buffer
        else:
            xb[...] = X[idx]  # gather, then cast
        yb = y[idx]
        logits = model.forward(xb)
        batch_loss, grad = loss(logits, yb)
        if not np.isfinite(batch_loss):
            raise TrainingError(f"the loss became {batch_loss} after {seen} samples of this epoch; "
                                f"lower the learning rate (now {optimizer.lr})")
        model.backward(grad, need_input_grad=False)
        optimizer.step(model.grads())
        steps += 1
        if after_step is not None:
            after_step(steps)
        total_loss += batch_loss * len(idx)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        seen += len(idx)
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1),
            "samples": float(seen)}


def predict_logits(model: Sequential, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits ``(samples, classes)`` in evaluation mode (no dropout, running statistics).

    The model's previous mode is restored afterwards.
    """
    _check_xy(X)
    was_training = model.training
    model.eval()
    try:
        chunks = [model.forward(X[i:i + batch_size].astype(model.dtype, copy=False))
                  for i in range(0, X.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not chunks:
        raise DataError("no inputs to predict")
    return np.concatenate(chunks)


def predict_proba(model: Sequential, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities ``(samples, classes)`` in evaluation mode (see :func:`predict_logits`)."""
    return softmax(predict_logits(model, X, batch_size))
