"""A multi-layer perceptron of Dense-Activation-BatchNorm-Dropout blocks (the NumPy engine's twin)."""

from __future__ import annotations

from torch import nn

from nnlab.models.registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


@register_model
def mlp(in_chans: int = 1, num_classes: int = 10, image_size: int = 28, hidden: list[int] = (512, 128, 64),
        activation: str = "relu", batchnorm: bool = True, dropout: float = 0.0) -> nn.Sequential:
    """Flatten, then per hidden size: Linear -> activation -> BatchNorm1d -> Dropout; a final Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_chans * image_size * image_size
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        if batchnorm:
            layers.append(nn.BatchNorm1d(size))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
