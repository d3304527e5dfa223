"""The LeNet family of the ablation assignment: parameter counts and layer kinds of all six variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnlab.config import ModelConfig
from nnlab.models import build_model, count_parameters

VARIANTS = {  # name: (parameters, hidden activation, pooling layer, convolutions)
    "lenet": (106_154, nn.Sigmoid, nn.AvgPool2d, 2),
    "lenet_alpha": (106_154, nn.ReLU, nn.AvgPool2d, 2),
    "lenet_beta": (106_154, nn.ReLU, nn.MaxPool2d, 2),
    "lenet_gamma": (106_154, nn.Identity, nn.MaxPool2d, 2),
    "lenet_omicron": (1_517_354, nn.ReLU, None, 2),
    "lenet_delta": (17_014, nn.ReLU, nn.MaxPool2d, 0),
}
ACTIVATIONS = (nn.Sigmoid, nn.ReLU, nn.Identity, nn.Tanh, nn.GELU)


def _build(name: str) -> nn.Module:
    return build_model(ModelConfig(name=name), in_chans=1, num_classes=10, image_size=28)


def _kinds(model: nn.Module, kinds) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_parameters_and_layers(name):
    params, activation, pool, convs = VARIANTS[name]
    model = _build(name)
    assert count_parameters(model) == params
    conv_layers = _kinds(model, nn.Conv2d)
    assert len(conv_layers) == convs
    for conv in conv_layers:
        assert conv.kernel_size == (3, 3) and conv.padding == "same"
    assert [c.out_channels for c in conv_layers] == [6, 16][:convs]
    # Hidden activations: one after each convolution and after each of the two hidden dense layers.
    acts = _kinds(model, ACTIVATIONS)
    assert len(acts) == convs + 2
    assert all(type(a) is activation for a in acts), [type(a).__name__ for a in acts]
    pools = _kinds(model, (nn.AvgPool2d, nn.MaxPool2d))
    if pool is None:
        assert pools == []
    else:
        assert len(pools) == 2 and all(type(p) is pool and p.kernel_size == 2 for p in pools)
    dense = _kinds(model, nn.Linear)
    assert [d.out_features for d in dense] == [120, 84, 10]
    # The output is raw logits: the softmax lives in the loss, so the last layer is the dense one.
    assert isinstance(list(model.modules())[-1], nn.Linear)
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_alpha_beta_gamma_share_lenets_parameter_count():
    counts = {n: count_parameters(_build(n)) for n in ("lenet", "lenet_alpha", "lenet_beta", "lenet_gamma")}
    assert len(set(counts.values())) == 1, counts

