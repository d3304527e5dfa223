"""The model registry in the style of timm: small registered builders, plus any timm model as `timm:<name>`.

A builder takes `in_chans`, `num_classes`, `image_size` and the model-section options it
declares, and returns an `nn.Module` mapping (B, in_chans, H, W) images to (B, num_classes) logits.
The built-in builders register themselves when `nnlab.models` is imported (lenet, mlp).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import timm
from torch import nn

from nnlab.config import ModelConfig, did_you_mean, options_for
from nnlab.errors import ModelError
from nnlab.models.timm_adapter import build_timm

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make a builder available under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*", include_timm: bool = True) -> list[str]:
    """Registered builders and timm models (as `timm:<name>`) whose name matches the glob."""
    names = sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
    if include_timm:
        bare = pattern.removeprefix("timm:")
        names += [f"timm:{n}" for n in timm.list_models(bare)]
    return names


def describe_models(pattern: str = "", include_timm: bool = True) -> list[tuple[str, str]]:
    """(name, one-line description) of the models matching `pattern`: a substring (`resnet`) or a glob
    (`lenet_*`); registered builders are described by their docstring's first line."""
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    rows = [(n, (_REGISTRY[n].__doc__ or "").strip().splitlines()[0] if _REGISTRY[n].__doc__ else "")
            for n in list_models(glob, include_timm=False)]
    if include_timm:
        rows += [(n, "timm") for n in list_models(glob if glob.startswith("timm:") else f"timm:{glob}")
                 if n.startswith("timm:")]
    return rows


def build_plain(cfg: ModelConfig, in_chans: int, num_classes: int, image_size: int) -> nn.Module:
    """The timm or registered model `cfg.name` with its own classifier (timm: `num_classes=0` pools features)."""
    if cfg.name.startswith("timm:"):
        return build_timm(cfg.name.removeprefix("timm:"), in_chans, num_classes, cfg.pretrained, cfg.dropout)
    if cfg.name not in _REGISTRY:
        raise ModelError(f"model.name: unknown model {cfg.name!r}{did_you_mean(cfg.name, _REGISTRY)} "
                         f"(registered: {', '.join(sorted(_REGISTRY))}; "
                         "or timm:<name>, see `nnlab models`)")
    builder = _REGISTRY[cfg.name]
    return builder(**options_for(builder, cfg, in_chans=in_chans, num_classes=num_classes, image_size=image_size))
