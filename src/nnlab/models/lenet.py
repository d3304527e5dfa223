"""LeNet-5 as in the reference assignment, and its five ablated variants (one parametrised definition).

28x28x1 input, 3x3 'same' convolutions with 6 and 16 filters, 2x2 pooling, dense 120-84-classes.
"""

from __future__ import annotations

from torch import nn

from nnlab.models.registry import register_model

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "linear": nn.Identity}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class LeNet(nn.Module):
    """`conv`: keep the two convolutions; `pool`: None removes the pooling layers."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, image_size: int = 28,
                 activation: str = "sigmoid", pool: str | None = "avg", conv: bool = True) -> None:
        super().__init__()
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        channels, side = in_chans, image_size
        for out_channels in (6, 16):
            if conv:
                layers += [nn.Conv2d(channels, out_channels, 3, padding="same"), act()]
                channels = out_channels
            if pool:
                layers.append(_POOLS[pool](2))
                side //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, 120), act(), nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes))  # logits: softmax lives in the loss

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def lenet(in_chans: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """LeNet-5: sigmoid, average pooling (106,154 parameters at 28x28x1, 10 classes)."""
    return LeNet(in_chans, num_classes, image_size, "sigmoid", "avg")


@register_model
def lenet_alpha(in_chans: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """`lenet` with ReLU."""
    return LeNet(in_chans, num_classes, image_size, "relu", "avg")


@register_model
def lenet_beta(in_chans: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """`alpha` with max pooling."""
    return LeNet(in_chans, num_classes, image_size, "relu", "max")


@register_model
def lenet_gamma(in_chans: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """`beta` with no activation in the hidden layers (a linear model up to the softmax)."""
    return LeNet(in_chans, num_classes, image_size, "linear", "max")


@register_model
def lenet_omicron(in_chans: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """`beta` with no pooling layers (1,517,354 parameters)."""
    return LeNet(in_chans, num_classes, image_size, "relu", None)


@register_model
def lenet_delta(in_chans: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """`beta` with no convolutions: two max pools, then the dense layers (17,014 parameters)."""
    return LeNet(in_chans, num_classes, image_size, "relu", "max", conv=False)
