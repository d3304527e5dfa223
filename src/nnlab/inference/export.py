"""`nnlab export RUN --format onnx --out DIR`: a trained doodle model as ONNX.

DIR gets
  model.onnx          input "image" float32 (batch, C, H, W) in [0, 1], output "logits" (batch, classes);
                      the batch axis is dynamic
  classes.txt         one class name per line, in output order
  preprocessing.json  how a drawing becomes the input (size, encoding, line width, padding,
                      normalisation, channels), versions, and the parity check measured here
  samples.ndjson      a few validation drawings (Google's format) for the demo's "show me one"

Before writing, onnxruntime's outputs are compared with torch's on validation drawings and
random inputs, at two batch sizes; a difference beyond the tolerance is an error.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from nnlab.errors import ModelError, NnlabError
from nnlab.fileio import write_classes
from nnlab.inference.doodle import Preprocessing, check_stroke_run, onnx_session, validation_drawings
from nnlab.ingest.writers import write_ndjson
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained
from nnlab.version import __version__

OPSET = 17  # supported by every onnxruntime since 1.11 and by torch's TorchScript exporter
TOLERANCE = 1e-4  # max |onnx - torch| on logits, relative to max(1, max |logit|)
SAMPLES = 64


@dataclass
class ExportResult:
    out_dir: Path
    max_abs_diff: float
    checked_inputs: int


def export_onnx(run, out_dir: str | Path, opset: int = OPSET, samples: int = SAMPLES) -> ExportResult:
    """Export `run` (a `Run` or its path) to `out_dir`; returns where and the measured parity."""
    run = run if isinstance(run, Run) else Run.open(run)
    check_stroke_run(run)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "model.onnx").is_file():
        raise NnlabError(f"{out_dir}: exists and is not an export directory; choose an empty or new --out")
    classes = run.classes()
    prep = Preprocessing.from_config(run.config.data)
    model = load_trained(run, "cpu")
    drawings = validation_drawings(run.config, limit=samples)
    dummy = torch.zeros(2, prep.channels, prep.image_size, prep.image_size)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is meant to be shared
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export's, which needs
            # onnxscript; it still exports these models exactly.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (dummy,), str(tmp / "model.onnx"), input_names=["image"],
                              output_names=["logits"], opset_version=opset, dynamo=False,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        diff, checked = _parity(model, onnx_session(tmp / "model.onnx"), prep, drawings)
        write_classes(tmp / "classes.txt", classes)
        write_ndjson(drawings, tmp / "samples.ndjson")
        info = {
            "format": "nnlab-onnx", "format_version": 1, "nnlab_version": __version__,
            "torch_version": torch.__version__, "onnxruntime_version": onnxruntime.__version__,
            "opset": opset, "run": str(run.path.resolve()), "name": run.config.name, "model": run.config.model.name,
            "num_classes": len(classes),
            "input": {"name": "image", "shape": ["batch", prep.channels, prep.image_size, prep.image_size],
                      "dtype": "float32"},
            "output": {"name": "logits", "shape": ["batch", len(classes)],
                       "note": "unnormalised scores; softmax gives probabilities"},
            "drawing": prep.to_json() | {
                "coordinates": "Google's simplified frame: integers 0..255, the drawing aligned to the top-left "
                               "and scaled so its larger side spans 0..255 (simplify raw drawings first)",
                "renderer": "nnlab.data.stroke_dataset.to_model_input"},
            "normalisation": {"scale": 1 / 255, "mean": 0.0, "std": 1.0,
                              "formula": "input = rendered_pixel / 255 (ink bright on 0)"},
            "parity": {"max_abs_diff": diff, "inputs": checked, "tolerance": TOLERANCE},
        }
        (tmp / "preprocessing.json").write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out_dir=out_dir, max_abs_diff=diff, checked_inputs=checked)


def _parity(model, session, prep, drawings) -> tuple[float, int]:
    """Largest |onnxruntime - torch| on the validation drawings (batch of all, and one alone)
    and on random inputs; raises ModelError beyond the tolerance."""
    rng = np.random.default_rng(0)
    shape = (prep.channels, prep.image_size, prep.image_size)
    batches = [rng.random((3, *shape), dtype=np.float32)]
    if drawings:
        images = prep.to_input(drawings)
        batches += [images, images[:1]]
    worst, checked = 0.0, 0
    for x in batches:
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).float().numpy()
        got = session.run(None, {"image": x})[0]
        if got.shape != ref.shape:
            raise ModelError(f"ONNX export: output shape {got.shape} differs from torch's {ref.shape}")
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        if not diff <= TOLERANCE * max(1.0, float(np.abs(ref).max())):
            raise ModelError(f"ONNX export: onnxruntime and torch differ by {diff:.3g} on a batch of {len(x)} "
                             f"(tolerance {TOLERANCE:g}); the model has an operation the exporter does not "
                             f"translate faithfully")
        worst, checked = max(worst, diff), checked + len(x)
    return worst, checked
