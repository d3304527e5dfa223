"""Save and load NumPy-engine models: one ``.npz`` file, no pickle.

The file holds every parameter and buffer under its state-dict name
(``"0.weight"``, ``"2.running_mean"``, ...), optionally the optimiser state
under ``"optimizer/<slot>/<param>"``, and a JSON header under ``"architecture"``
(a plain unicode array, readable with ``np.load(path, allow_pickle=False)``)::

    {"format": "nnlab-scratch", "version": 1, "dtype": "float32",
     "layers": [{"type": "Dense", "in_features": 784, "out_features": 512}, ...],
     "optimizer": {"type": "Adam", "lr": 0.001, ...}, "meta": {...}}
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.errors import ModelError
from nnlab.scratch.layers import LAYER_TYPES, Sequential
from nnlab.scratch.optim import Optimizer

__all__ = ["FORMAT", "save_model", "load_model", "load_weights", "read_header"]

FORMAT = "nnlab-scratch"
VERSION = 1
_HEADER = "architecture"
_OPT = "optimizer/"


def _describe(layer: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in layer.items() if k != "type")
    return f"{layer.get('type')}({args})"


def save_model(path: str | os.PathLike, model: Sequential, *, optimizer: Optimizer | None = None,
               meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and ``optimizer``'s state, and JSON-able ``meta``) to ``path``.

    The file is written next to its destination and then renamed, so an
    interrupted save never leaves a truncated model behind. Returns the path.
    """
    path = Path(path)
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "dtype": model.dtype.name,
                              "layers": model.architecture(), "meta": meta or {}}
    arrays = dict(model.state_dict())
    if optimizer is not None:
        header["optimizer"] = {"type": type(optimizer).__name__, **optimizer.hyperparams()}
        arrays.update({_OPT + k: v for k, v in optimizer.state_dict().items()})
    arrays[_HEADER] = np.array(json.dumps(header))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" suffix
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelError(f"{path} is not a readable .npz model file ({e})") from e
    if _HEADER not in arrays:
        raise ModelError(f"{path} has no '{_HEADER}' entry: not a model saved by nnlab's NumPy engine")
    try:
        header = json.loads(str(arrays.pop(_HEADER)))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: the architecture header is not valid JSON ({e})") from e
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ModelError(f"{path}: format {header.get('format')!r} version {header.get('version')!r}, "
                         f"expected {FORMAT!r} version {VERSION}")
    return header, arrays


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a saved model (architecture, dtype, optimizer, meta)."""
    return _read(path)[0]


def _build(header: dict[str, Any], path: Path, dtype: Any) -> Sequential:
    layers = []
    for i, spec in enumerate(header["layers"]):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        cls = LAYER_TYPES.get(spec.get("type"))
        if cls is None:
            raise ModelError(f"{path}: layer {i} has unknown type {spec.get('type')!r}; "
                             f"known: {sorted(LAYER_TYPES)}")
        if "dtype" in inspect.signature(cls).parameters:
            kwargs["dtype"] = dtype
        try:
            layers.append(cls(**kwargs))
        except TypeError as e:
            raise ModelError(f"{path}: layer {i} {_describe(spec)} cannot be built ({e})") from e
    return Sequential(*layers)


def _fill(model: Sequential, arrays: dict[str, np.ndarray], path: Path) -> None:
    """Copy the file's arrays into the model's, checking names and shapes first."""
    own = model.state_dict()
    missing = sorted(set(own) - set(arrays))
    extra = sorted(k for k in set(arrays) - set(own) if not k.startswith(_OPT))
    if missing or extra:
        raise ModelError(f"{path}: arrays do not match the model (missing in file: {missing}, "
                         f"unexpected in file: {extra})")
    for name, arr in own.items():
        if arrays[name].shape != arr.shape:
            raise ModelError(f"{path}: array '{name}' has shape {arrays[name].shape} in the file, "
                             f"the model expects {arr.shape}")
    for name, arr in own.items():
        arr[...] = arrays[name]  # cast to the model's dtype if the file's differs


def load_model(path: str | os.PathLike, *, dtype: Any = None) -> Sequential:
    """Rebuild the model described in ``path`` and load its weights.

    ``dtype`` overrides the saved dtype (e.g. float64 for checks). The model is
    returned in evaluation mode, ready to predict.
    """
    header, arrays = _read(path)
    model = _build(header, Path(path), np.dtype(dtype or header.get("dtype", "float32")))
    _fill(model, arrays, Path(path))
    return model.eval()


def load_weights(model: Sequential, path: str | os.PathLike, *,
                 optimizer: Optimizer | None = None) -> dict[str, Any]:
    """Load the weights in ``path`` into an existing ``model`` (and ``optimizer``'s state).

    Raises :class:`ModelError` naming the first layer or array that differs
    when the file was saved from another architecture. Returns the saved ``meta``.
    """
    path = Path(path)
    header, arrays = _read(path)
    saved, ours = header["layers"], model.architecture()
    problems = [] if len(saved) == len(ours) else [
        f"the file has {len(saved)} layers, the model {len(ours)}"]
    first = next((i for i, (a, b) in enumerate(zip(saved, ours)) if a != b), None)
    if first is not None:
        problems.append(f"layer {first} is {_describe(saved[first])} in the file but "
                        f"{_describe(ours[first])} in the model")
    if problems:
        raise ModelError(f"{path} does not fit this model: {'; '.join(problems)}")
    _fill(model, arrays, path)
    if optimizer is not None:
        kind = header.get("optimizer", {}).get("type")
        if kind != type(optimizer).__name__:
            raise ModelError(f"{path} holds {kind or 'no'} optimizer state, "
                             f"cannot restore a {type(optimizer).__name__}")
        optimizer.load_state_dict({k[len(_OPT):]: v for k, v in arrays.items() if k.startswith(_OPT)})
    return header.get("meta", {})
