"""The model registry in the style of timm: small registered builders, plus any timm model as `timm:<name>`.

A builder takes `in_chans`, `num_classes`, `image_size` and the model-section options it
declares, and returns an `nn.Module` mapping (B, in_chans, H, W) images to (B, num_classes) logits.
The built-in builders register themselves when `nnlab.models` is imported (lenet, mlp).
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from nnlab.config import ModelConfig, options_for
from nnlab.schema_errors import did_you_mean
from nnlab.errors import ModelError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: make a builder available as `model.name` under its function name (or `name`).

    A builder takes the keyword arguments it declares among `in_chans`, `num_classes`, `image_size` and the
    model section's options (`dropout`, `hidden`, ...), and returns an `nn.Module` mapping (B, in_chans, H, W)
    images to (B, num_classes) logits. Use it bare (`@register_model`) or named (`@register_model(name="x")`).
    A registered name lives in this process only: a TOML (or a run reloaded in another process) can name
    the builder by its import path instead, `model.name = "mypkg.models:tiny_cnn"`."""
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name or builder.__name__] = builder
        return builder

    return add(fn) if fn is not None else add


def import_path(obj: Any) -> str:
    """`module:qualname` of a function or class, the form `model.name` takes for user code."""
    return f"{obj.__module__}:{obj.__qualname__}"


def model_name_for(model: str | nn.Module | Callable[..., nn.Module]) -> str:
    """The `model.name` of what `nnlab.fit(..., model=...)` was given, registered for this process:
    a name as it is; a builder (function or class) under its import path; an `nn.Module` instance under
    its class's import path, built in this process as a copy of the instance (its architecture and
    initial weights). In another process the import path is imported and called as a builder, so a
    class given as an instance must take the builder's arguments (or none) to be rebuilt there."""
    if isinstance(model, str):
        return model
    if isinstance(model, nn.Module):
        instance = copy.deepcopy(model)
        name = import_path(type(model))
        _REGISTRY[name] = lambda **_: copy.deepcopy(instance)
        return name
    if callable(model):
        name = import_path(model)
        _REGISTRY[name] = model
        return name
    raise ModelError(f"model: give a model name, an nn.Module or a function returning one, got {type(model).__name__}")


def _import_builder(name: str) -> Callable[..., nn.Module]:
    """The builder an import path `pkg.module:attr` names, or a ModelError saying how to make it importable."""
    module, _, attr = name.partition(":")
    where = ("it was defined in __main__ (a notebook or script): move it into a module to use it in another "
             "process, or register it again here") if module == "__main__" else (
        "make its package importable here (install it, or put its folder on PYTHONPATH)")
    try:
        target: Any = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"model.name {name!r}: cannot import the model's builder ({type(exc).__name__}: {exc}); "
                         f"{where}") from None
    if not callable(target):
        raise ModelError(f"model.name {name!r}: {type(target).__name__} is not a builder (a function or class)")
    return target


def _call_builder(name: str, builder: Callable[..., nn.Module], cfg: ModelConfig, **fixed: Any) -> nn.Module:
    """A builder called with the arguments it declares (in_chans, num_classes, image_size, model options)."""
    try:
        params = inspect.signature(builder).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            fixed = {k: v for k, v in fixed.items() if k in params}
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        pass
    try:
        model = builder(**options_for(builder, cfg, **fixed))
    except TypeError as exc:
        raise ModelError(f"model.name {name!r}: the builder cannot be called with the arguments it declares "
                         f"({exc}); give a function of (in_chans, num_classes, image_size) returning the "
                         "module") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.name {name!r}: the builder returned {type(model).__name__}, not an nn.Module")
    return model


def list_models(pattern: str = "*", include_timm: bool = True) -> list[str]:
    """Registered builders and timm models (as `timm:<name>`) whose name matches the glob."""
    names = sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
    if include_timm:
        import timm  # heavy (torchvision, ~3 s): only timm models need it

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
        from nnlab.models.timm_adapter import build_timm  # heavy (timm): a LeNet run never loads it

        return build_timm(cfg.name.removeprefix("timm:"), in_chans, num_classes, cfg.pretrained, cfg.dropout)
    if cfg.name not in _REGISTRY and ":" in cfg.name:  # user code by import path: pkg.module:builder
        _REGISTRY[cfg.name] = _import_builder(cfg.name)
    if cfg.name not in _REGISTRY:
        raise ModelError(f"model.name: unknown model {cfg.name!r}{did_you_mean(cfg.name, _REGISTRY)} "
                         f"(registered: {', '.join(sorted(_REGISTRY))}; "
                         "or timm:<name>, see `nnlab models`)")
    builder = _REGISTRY[cfg.name]
    if ":" in cfg.name:  # user code: its own arguments only, and a clear error when it does not fit
        return _call_builder(cfg.name, builder, cfg, in_chans=in_chans, num_classes=num_classes, image_size=image_size)
    return builder(**options_for(builder, cfg, in_chans=in_chans, num_classes=num_classes, image_size=image_size))
