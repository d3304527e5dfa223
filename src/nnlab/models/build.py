"""Building the configured model (plain classifier or embedding model), loading local weights,
counting parameters and the per-layer summary."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from nnlab.config import ModelConfig
from nnlab.device import load_torch_file
from nnlab.errors import ModelError
from nnlab.models.heads import build_embedding_model
from nnlab.models.registry import build_plain


def build_model(cfg: ModelConfig, in_chans: int, num_classes: int, image_size: int) -> nn.Module:
    """Build the model the config names, with local weights loaded when `weights` is set."""
    if cfg.embedding_model:
        model = build_embedding_model(cfg, in_chans, num_classes, image_size)
    else:
        model = build_plain(cfg, in_chans, num_classes, image_size)
    if cfg.weights:
        load_weights(model, Path(cfg.weights))
    return model


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict (.pt/.pth, weights only) or a .safetensors file into `model`."""
    if not path.is_file():
        raise ModelError(f"model.weights: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = load_torch_file(path)
            state = state.get("model", state) if isinstance(state, dict) else state
    except ModelError as exc:
        raise ModelError(f"model.weights: cannot read {exc}") from None
    except Exception as exc:  # noqa: BLE001  (any unreadable file gets the same clear message)
        raise ModelError(f"model.weights: cannot read {path}: {exc}") from None
    own = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ModelError(f"model.weights: shape mismatch in {path} (file vs model): {'; '.join(mismatched[:3])}"
                         " (saved for another number of classes or input channels?)")
    result = model.load_state_dict(state, strict=False)
    if len(result.missing_keys) == len(own):
        raise ModelError(f"model.weights: {path} shares no parameter names with the model")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summary_rows(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, str, int]]:
    """Per leaf layer: (name, kind, output shape, parameters), like Keras' summary()."""
    rows: list[tuple[str, str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            def hook(mod, _inp, out, name=name):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else "-"
                rows.append((name, type(mod).__name__, str(shape), sum(p.numel() for p in mod.parameters())))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows
