"""`nnlab export RUN --format onnx --out DIR`: a trained torch model as ONNX.

For a doodle model (trained on drawings), DIR gets
  model.onnx          input "image" float32 (batch, C, H, W) in [0, 1], output "logits" (batch, classes);
                      the batch axis is dynamic
  classes.txt         one class name per line, in output order
  preprocessing.json  how a drawing becomes the input (size, encoding, line width, padding,
                      normalisation, channels), versions, and the parity check measured here
  samples.ndjson      a few validation drawings (Google's format) for the demo's "show me one"

For an image model (any other data kind), `task` in preprocessing.json says which:
  classifier          output "logits" (batch, classes)
  embedding           output "embedding" (batch, dimension), L2-normalised (an embedding model:
                      model.embedding_dim or a margin head); preprocessing.json also holds its
                      dimension, the model's fingerprint and the run's open-set verification
                      thresholds (the default of `nnlab identify`)
with input "image" float32 (batch, C, H, W) after the run's evaluation transform: resize to
image_size x image_size (antialiased bilinear, aspect ratio not kept), (pixel / 255 - mean) / std.

Before writing, onnxruntime's outputs are compared with torch's on validation inputs and
random inputs, at two batch sizes; a difference beyond the tolerance is an error.

With ``quantize="int8"`` model.onnx is then replaced by its INT8 version, scored against the float
one on the validation split and refused beyond `max_drop` (`quantize.py`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn

from nnlab.datasets.kinds import is_drawings
from nnlab.errors import ModelError, NnlabError
from nnlab.fileio import OutputKind, atomic_write_text, kill_point, staged_output_dir, write_classes
from nnlab.inference.models.backends import onnx_session
from nnlab.inference.models.doodle import Preprocessing, check_stroke_run, validation_drawings
from nnlab.inference.models.quantize import QuantizeReport, quantize_export
from nnlab.inference.models.image import (
    ImagePreprocessing,
    check_image_run,
    fingerprint,
    run_module,
    run_thresholds,
    validation_images,
)
from nnlab.ingest.writers import write_ndjson
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained, raw_handling
from nnlab.version import __version__

OPSET = 17  # supported by every onnxruntime since 1.11 and by torch's TorchScript exporter
TOLERANCE = 1e-4  # max |onnx - torch| on the outputs, relative to max(1, max |output|)
SAMPLES = 64
#: an export folder as `export_onnx` writes it (see `fileio.check_output_dir`)
EXPORT_FOLDER = OutputKind("export", "preprocessing.json",
                           frozenset({"model.onnx", "classes.txt", "preprocessing.json", "samples.ndjson"}))


@dataclass
class ExportResult:
    out_dir: Path
    max_abs_diff: float
    checked_inputs: int
    quantization: QuantizeReport | None = None


def export_onnx(run, out_dir: str | Path, opset: int = OPSET, samples: int = SAMPLES,
                overwrite: bool = False, quantize: str | None = None, max_drop: float = 0.01,
                quantize_method: str = "auto") -> ExportResult:
    """Export `run` (a `Run` or its path) to `out_dir`; returns where and the measured parity. An
    existing export at `out_dir` is replaced only with `overwrite`; any other non-empty folder never.
    quantize="int8": model.onnx is the INT8 model (`quantize.quantize_export`, by `quantize_method`),
    refused when its validation metric is more than `max_drop` below the float model's."""
    run = run if isinstance(run, Run) else Run.open(run)
    if quantize not in (None, "int8"):
        raise NnlabError(f"--quantize {quantize!r}: only 'int8' is supported")
    drawings = is_drawings(run.config)
    if drawings:
        check_stroke_run(run)
    else:
        check_image_run(run)
    files = _doodle_files if drawings else _image_files
    after = (lambda tmp: quantize_export(tmp, run, quantize_method, max_drop)) if quantize else None
    return _export(run, out_dir, lambda tmp: files(run, tmp, opset, samples), overwrite, after)


def _export(run: Run, out_dir: str | Path, write: Callable[[Path], tuple[float, int]],
            overwrite: bool = False, after: Callable[[Path], QuantizeReport] | None = None) -> ExportResult:
    """`write(tmp)` fills a fresh directory beside `out_dir` (then `after(tmp)`, the INT8 step), which
    then replaces `out_dir` (an export folder only, and only with `overwrite`: `fileio.check_output_dir`)."""
    out_dir = Path(out_dir)
    with staged_output_dir(out_dir, EXPORT_FOLDER, overwrite) as tmp:
        diff, checked = write(tmp)
        report = after(tmp) if after else None
        kill_point("export-written")  # every file of the new export is in `tmp`; out_dir is still the old one
    return ExportResult(out_dir=out_dir, max_abs_diff=diff, checked_inputs=checked, quantization=report)


def _to_onnx(module: nn.Module, example: np.ndarray, file: Path, output: str, opset: int, input_name: str = "image",
             dynamic: dict[int, str] | None = None) -> None:
    """Export with the batch axis dynamic (and the other axes of `dynamic`, e.g. a sequence's length)."""
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export's, which needs
        # onnxscript; it still exports these models exactly. Its LSTM note on batch sizes does not
        # apply: the recurrent layers start from zero states, and parity is checked at two sizes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(module, (torch.from_numpy(example),), str(file), input_names=[input_name],
                          output_names=[output], opset_version=opset, dynamo=False,
                          dynamic_axes={input_name: {0: "batch"} | (dynamic or {}), output: {0: "batch"}})


def _head(run: Run, opset: int, classes: list[str]) -> dict[str, Any]:
    return {"format": "nnlab-onnx", "format_version": 1, "nnlab_version": __version__,
            "torch_version": torch.__version__, "onnxruntime_version": onnxruntime.__version__,
            "opset": opset, "run": str(run.path.resolve()), "name": run.config.name, "model": run.config.model.name,
            "num_classes": len(classes)}


def _doodle_files(run: Run, tmp: Path, opset: int, samples: int) -> tuple[float, int]:
    classes = run.classes()
    prep = Preprocessing.from_config(run.config.data, raw_handling(run))
    model = load_trained(run, "cpu")
    drawings = validation_drawings(run.config, limit=samples, raw=prep.raw)
    rng = np.random.default_rng(0)
    dynamic = {1: "points"} if prep.input == "sequence" else None
    _to_onnx(model, prep.random_input(rng, 2), tmp / "model.onnx", "logits", opset, prep.input_name, dynamic)
    batches = [prep.random_input(rng)] + ([prep.to_input(drawings), prep.to_input(drawings[:1])] if drawings else [])
    diff, checked = _parity(model, onnx_session(tmp / "model.onnx"), batches, prep.input_name)
    write_classes(tmp / "classes.txt", classes)
    write_ndjson(drawings, tmp / "samples.ndjson")
    info = _head(run, opset, classes) | {
        "task": "doodle",
        "input": {"name": prep.input_name, "shape": prep.input_shape, "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(classes)],
                   "note": "unnormalised scores; softmax gives probabilities"},
        "drawing": prep.to_json() | {
            "coordinates": "Google's frame: the drawing aligned to the top-left and scaled so its larger side "
                           "spans 0..255; raw drawings simplified first (raw = 'simplify') or only framed, time "
                           "kept (raw = 'frame'), as the model was trained",
            "renderer": "nnlab.datasets.strokes.to_sequence_input (nnlab.strokes.sequence)" if prep.input == "sequence"
            else "nnlab.datasets.strokes.to_model_input"},
        "normalisation": {"scale": 1 / 255, "mean": 0.0, "std": 1.0,
                          "formula": "input = rendered_pixel / 255 (ink bright on 0)"},
        "parity": {"max_abs_diff": diff, "inputs": checked, "tolerance": TOLERANCE},
    }
    atomic_write_text(tmp / "preprocessing.json", json.dumps(info, indent=2) + "\n")
    return diff, checked


def _image_files(run: Run, tmp: Path, opset: int, samples: int) -> tuple[float, int]:
    classes = run.classes()
    module, task = run_module(run)
    prep = ImagePreprocessing.from_config(run.config.data)
    shape = (prep.channels, prep.image_size, prep.image_size)
    output = "embedding" if task == "embedding" else "logits"
    rng = np.random.default_rng(0)
    _to_onnx(module, rng.random((2, *shape), dtype=np.float32), tmp / "model.onnx", output, opset)
    images = prep.to_input(validation_images(run, samples))
    batches = [rng.random((3, *shape), dtype=np.float32)] + ([images, images[:1]] if len(images) else [])
    diff, checked = _parity(module, onnx_session(tmp / "model.onnx"), batches)
    write_classes(tmp / "classes.txt", classes)
    with torch.inference_mode():
        width = int(module(torch.zeros(1, *shape)).shape[1])
    info = _head(run, opset, classes) | {
        "task": task,
        "input": {"name": "image", "shape": ["batch", *shape], "dtype": "float32"},
        "output": ({"name": "embedding", "shape": ["batch", width], "dimension": width, "l2_normalised": True,
                    "note": "cosine similarity = dot product; classes.txt lists the training identities"}
                   if task == "embedding" else
                   {"name": "logits", "shape": ["batch", width],
                    "note": "unnormalised scores; softmax gives probabilities"}),
        "image": prep.to_json() | {
            "resize": "to image_size x image_size, bilinear with antialiasing (torchvision), aspect ratio not kept",
            "colour": "grey repeated to 3 channels, or RGB to grey by ITU-R 601 luminance; alpha dropped"},
        "normalisation": {"scale": 1 / 255, "mean": prep.mean, "std": prep.std,
                          "formula": "input = (pixel / 255 - mean) / std"},
        "fingerprint": fingerprint(module, prep),
        "parity": {"max_abs_diff": diff, "inputs": checked, "tolerance": TOLERANCE},
    }
    if task == "embedding":
        info["verification"] = {"threshold_at_fpr": run_thresholds(run),
                                "note": "cosine thresholds from the run's open-set verification ROC (test split)"}
    atomic_write_text(tmp / "preprocessing.json", json.dumps(info, indent=2) + "\n")
    return diff, checked


def _parity(model, session, inputs: list[np.ndarray], input_name: str = "image") -> tuple[float, int]:
    """Largest |onnxruntime - torch| on `inputs` (random and validation batches of several sizes);
    raises ModelError beyond the tolerance."""
    worst, checked = 0.0, 0
    for x in inputs:
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).float().numpy()
        got = session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        if got.shape != ref.shape:
            raise ModelError(f"ONNX export: output shape {got.shape} differs from torch's {ref.shape}")
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        if not diff <= TOLERANCE * max(1.0, float(np.abs(ref).max())):
            raise ModelError(f"ONNX export: onnxruntime and torch differ by {diff:.3g} on a batch of {len(x)} "
                             f"(tolerance {TOLERANCE:g}); the model has an operation the exporter does not "
                             f"translate faithfully")
        worst, checked = max(worst, diff), checked + len(x)
    return worst, checked
