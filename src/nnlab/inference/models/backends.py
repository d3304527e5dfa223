"""A model that answers batches, on torch or onnxruntime: the one backend every served or exported model
(doodle models, image classifiers, embedding models) runs on.

    backend = load_backend("runs/doodles-...")   # a run directory: torch, best checkpoint
    backend = load_backend("export/")            # an `nnlab export` directory: onnxruntime
    backend.predict_batch(x)                     # (B, classes) probabilities, or (B, D) unit embeddings
    backend.classes, backend.task, backend.input # class names, "doodle" | "classifier" | "embedding", InputSpec

`x` is the model's float32 input batch, already preprocessed (`InputSpec` says its name and shape);
turning drawings or images into it is the caller's part (`doodle.Preprocessing`, `image.ImagePreprocessing`).
Both backends are thread-safe, so one instance serves every request.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from nnlab.datasets.kinds import input_channels, is_drawings, takes_sequences
from nnlab.errors import ModelError, NnlabError
from nnlab.evaluation.proba import proba_of_logits
from nnlab.fileio import read_classes, read_json_file
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained

TASKS = ("doodle", "classifier", "embedding")  # doodle: a classifier of drawings
EXPORT_FILES = ("model.onnx", "preprocessing.json", "classes.txt")


@dataclass(frozen=True)
class InputSpec:
    """The model's input: its name ("image", or "sequence" for stroke-sequence models) and shape (named
    axes are dynamic), as preprocessing.json states them."""

    name: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_config(cls, data: Any) -> InputSpec:
        """The input a run's `data` section makes: (batch, points, 5) sequences or (batch, C, H, W) images."""
        if takes_sequences(data):
            return cls("sequence", ("batch", "points", input_channels(data)))
        return cls("image", ("batch", input_channels(data), data.image_size, data.image_size))


class Backend(ABC):
    """A model that answers float32 input batches with its raw outputs (logits or embeddings) and, through
    `predict_batch`, with probabilities (doodle and classifier tasks) or L2-normalised embeddings."""

    name: ClassVar[str] = "?"  # "torch" or "onnxruntime"
    precision: str = "float32"  # "int8": an export of `nnlab export --quantize int8`

    def __init__(self, task: str, classes: list[str], input: InputSpec) -> None:
        if task not in TASKS:
            raise ModelError(f"unknown task {task!r} (expected {', '.join(TASKS)})")
        self.task, self.classes, self.input = task, classes, input

    @abstractmethod
    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """The model's float32 outputs for one input batch."""

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, classes) in float64 for classifiers, the (B, D) embeddings otherwise."""
        return self.interpret(self.outputs(batch))

    def interpret(self, outputs: np.ndarray) -> np.ndarray:
        """What raw outputs answer: probabilities of logits (doodle, classifier), embeddings as they are."""
        return outputs if self.task == "embedding" else proba_of_logits(outputs)


class TorchBackend(Backend):
    """A torch module on the CPU, without autograd."""

    name = "torch"

    def __init__(self, module: nn.Module, task: str, classes: list[str], input: InputSpec) -> None:
        super().__init__(task, classes, input)
        self.module = module

    @classmethod
    def from_run(cls, run: Run, threads: int | None = None) -> TorchBackend:
        """The run's best checkpoint (its embedding for an embedding model, see `trained_module`)."""
        module, task = trained_module(run)
        if threads:
            torch.set_num_threads(threads)
        return cls(module, task, run.classes(), InputSpec.from_config(run.config.data))

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        return torch_outputs(self.module, batch)


class OnnxBackend(Backend):
    """An onnxruntime CPU session of an `nnlab export` directory."""

    name = "onnxruntime"

    def __init__(self, session: Any, task: str, classes: list[str], input: InputSpec) -> None:
        super().__init__(task, classes, input)
        self.session = session

    @classmethod
    def from_export(cls, path: Path, threads: int | None = None, info: dict[str, Any] | None = None) -> OnnxBackend:
        """The export's model, classes (checked against preprocessing.json) and input."""
        info = read_export_info(path) if info is None else info
        classes_file = path / "classes.txt"
        if not classes_file.is_file():
            raise ModelError(f"{path}: no classes.txt")
        classes = read_classes(classes_file)
        if info.get("num_classes") not in (None, len(classes)):
            raise ModelError(f"{path}: classes.txt has {len(classes)} classes, preprocessing.json says "
                             f"{info['num_classes']}")
        given = info.get("input") or {}
        spec = InputSpec(str(given.get("name", "image")), tuple(given.get("shape", ("batch",))))
        backend = cls(onnx_session(path / "model.onnx", threads), export_task(info), classes, spec)
        backend.precision = str((info.get("quantization") or {}).get("dtype", "float32"))
        return backend

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        return onnx_outputs(self.session, batch)


class EmbeddingOutput(nn.Module):
    """An embedding model's L2-normalised embedding as its forward (what is exported and served)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.features(x), dim=1)


def trained_module(run: Run) -> tuple[nn.Module, str]:
    """The run's best checkpoint as the module to export or serve, and its task: a model of drawings is a
    doodle model; an embedding model (it has ``embed``) answers its L2-normalised embedding; any other its logits."""
    if run.config.engine != "torch":
        raise NnlabError(f"{run.path}: a {run.config.engine} run; only torch runs can be exported or served")
    model = load_trained(run, "cpu")
    if is_drawings(run.config):
        return model, "doodle"
    if hasattr(model, "embed"):
        return EmbeddingOutput(model).eval(), "embedding"
    return model, "classifier"


def torch_outputs(module: nn.Module, batch: np.ndarray) -> np.ndarray:
    """A torch module's float32 outputs for a float32 input batch (no autograd)."""
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()


def onnx_outputs(session: Any, batch: np.ndarray) -> np.ndarray:
    """An onnxruntime session's first output for a float32 input batch."""
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def onnx_session(model_file: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session. `threads` is the intra-op pool of one inference; the default
    (1) suits a server, where concurrent requests already keep the cores busy."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(model_file), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{model_file}: onnxruntime cannot load it ({exc})") from None


def is_export_dir(path: Path) -> bool:
    """Whether `path` holds an `nnlab export` (model.onnx and preprocessing.json)."""
    return (path / "model.onnx").is_file() and (path / "preprocessing.json").is_file()


def read_export_info(path: Path) -> dict[str, Any]:
    """An export's preprocessing.json; ModelError when missing or not JSON."""
    info_file = Path(path) / "preprocessing.json"
    try:
        info = read_json_file(info_file, ModelError)
    except FileNotFoundError:
        raise ModelError(f"{path}: no preprocessing.json (not an `nnlab export` directory)") from None
    if not isinstance(info, dict) or info.get("format", "nnlab-onnx") != "nnlab-onnx":
        raise ModelError(f"{info_file}: not the preprocessing.json of an `nnlab export` (format nnlab-onnx)")
    given = info.get("input")
    if not (isinstance(given, dict) and isinstance(given.get("name", ""), str) and isinstance(given.get("shape"), list)
            and all(isinstance(d, str) or (isinstance(d, int) and d > 0) for d in given["shape"])):
        raise ModelError(f"{info_file}: no valid \"input\" (its name and shape); export the run again")
    return info


def export_task(info: dict[str, Any]) -> str:
    """The task an export's preprocessing.json states (exports of doodle models before `task` existed: doodle)."""
    return str(info.get("task") or "doodle")


def load_backend(path: str | os.PathLike, threads: int | None = None) -> Backend:
    """A run directory (torch, best checkpoint) or an `nnlab export` directory (onnxruntime)."""
    path = Path(path)
    if is_export_dir(path):
        return OnnxBackend.from_export(path, threads)
    if (path / "config.toml").is_file():
        return TorchBackend.from_run(Run.open(path), threads)
    raise NnlabError(f"{path}: neither a run directory (config.toml) nor an export directory "
                     f"({', '.join(EXPORT_FILES)})")
