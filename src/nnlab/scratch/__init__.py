"""The NumPy engine: a network written by hand, forward and backward, layer by layer.

Everything a training run needs::

    from nnlab.scratch import Adam, build_mlp, fit_epoch, predict_proba, softmax_cross_entropy

    model = build_mlp(784, [512, 128, 64], 10, dropout=0.5, seed=0)
    opt = Adam(model.params(), lr=1e-3)
    for epoch in range(10):
        stats = fit_epoch(model, softmax_cross_entropy, opt, X_train, y_train, 128, rng)
    proba = predict_proba(model, X_test)   # eval mode: no dropout, running statistics
"""

from nnlab.scratch.layers import LAYER_TYPES, BatchNorm1d, Dense, Dropout, Layer, ReLU, Sequential, Sigmoid, Tanh
from nnlab.scratch.losses import log_softmax, softmax, softmax_cross_entropy
from nnlab.scratch.model import ACTIVATIONS, build_mlp
from nnlab.scratch.optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from nnlab.scratch.serialize import load_model, load_weights, read_header, save_model
from nnlab.scratch.trainer import fit_epoch, predict_logits, predict_proba

__all__ = [
    "ACTIVATIONS", "LAYER_TYPES", "OPTIMIZERS", "Adam", "AdamW", "BatchNorm1d", "Dense", "Dropout",
    "Layer", "Optimizer", "ReLU", "SGD", "Sequential", "Sigmoid", "Tanh", "build_mlp", "fit_epoch",
    "load_model", "load_weights", "log_softmax", "predict_logits", "predict_proba", "read_header",
    "save_model", "softmax", "softmax_cross_entropy",
]
