"""Softmax and softmax cross-entropy, computed stably from logits."""

from __future__ import annotations

import numpy as np

from nnlab.errors import DataError

__all__ = ["softmax", "log_softmax", "softmax_cross_entropy"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log softmax(z)`` row by row, as ``z - logsumexp(z)``.

    Subtracting the row maximum first makes every exponent <= 0, so ``exp``
    cannot overflow and the largest term is exactly 1 (the log never sees 0).
    """
    z = logits - logits.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities, row by row, from logits ``(batch, classes)``."""
    p = logits - logits.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``softmax(logits)`` against integer ``labels``, and its gradient.

    Returns ``(loss, dL/dlogits)``. With ``p = softmax(z)`` the gradient of the
    mean loss is ``(p - onehot(labels)) / batch``: one line, no division by p.
    Matches ``torch.nn.functional.cross_entropy`` (mean reduction).
    """
    n, k = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DataError(f"labels have shape {labels.shape}, expected ({n},) for {n} logits rows")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise DataError(f"labels must lie in 0..{k - 1} for {k} classes; "
                        f"got {labels.min()}..{labels.max()}")
    log_p = log_softmax(logits)
    rows = np.arange(n)
    loss = float(-log_p[rows, labels].mean(dtype=np.float64)) if n else 0.0
    grad = np.exp(log_p)  # softmax probabilities
    grad[rows, labels] -= 1
    grad /= max(n, 1)
    return loss, grad
