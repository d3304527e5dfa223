"""INT8 exports for CPU serving: `nnlab export RUN --quantize int8 [--max-drop 0.01]`.

The float export is written and checked against torch first (`export.py`); its model.onnx is then
quantized with onnxruntime.quantization and replaced by the INT8 model, and preprocessing.json gains a
``quantization`` record (method, the validation metric of the float and the INT8 model, the drop).
The folder is an ordinary export otherwise, so `serve`, `identify`, `gallery` and `predict` take it
as they take a float one; its fingerprint stays the trained weights' (a gallery built with the float
export accepts it; rebuild the gallery with the INT8 export to match it exactly).

Methods: ``static`` (QDQ: int8 weights per channel, uint8 activations calibrated on batches of the
run's validation split; meant for convolutions), ``dynamic`` (int8 weights of MatMul/Gemm/LSTM/GRU,
activations quantized per batch at run time; meant for sequence models and MLPs) and ``auto``, which
makes both and keeps the faster on this machine (a batch of 16 validation inputs, timed) of those
within the allowed drop (which wins depends on the CPU's int8 instructions, the model and the batch
size: on a 2-core AVX-512 VNNI machine static QDQ was twice as fast as the float model at batch 64 for
the test MobileNet, and slower at batch 1; the timings are recorded).
The metric is MAP@3 for drawings, accuracy for image classifiers and rank-1
(each validation embedding's nearest other one has its class) for embedding models, on the same
validation examples for both models; a drop over `max_drop` writes nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.datasets.kinds import is_drawings
from nnlab.errors import NnlabError
from nnlab.inference.models.backends import onnx_outputs, onnx_session
from nnlab.inference.models.doodle import Preprocessing, validation_drawings
from nnlab.inference.models.image import ImagePreprocessing, validation_set
from nnlab.metrics import accuracy, map_at_k_scores
from nnlab.runs.run import Run
from nnlab.runs.trained import raw_handling

METHODS = ("auto", "static", "dynamic")
MAX_EXAMPLES = 2000  # validation examples scored (both models), enough to see a 0.01 drop
CALIBRATION = 256  # of them, fed to the static calibration
BATCH = 64
TIMED_BATCH = 16  # what `auto` times: about a served micro-batch with 16 concurrent clients
_DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]


class QuantizationDropError(NnlabError):
    """The INT8 model scores more than --max-drop below the float one; nothing was written."""


@dataclass
class QuantizeReport:
    """What `quantize_export` measured and did (also stored as preprocessing.json's ``quantization``)."""

    method: str
    metric: str  # "map3", "accuracy" or "rank1"
    float_score: float
    int8_score: float
    drop: float
    max_drop: float
    examples: int
    calibration_examples: int
    float_bytes: int
    int8_bytes: int
    seconds: float


def validation_batches(run: Run, limit: int = MAX_EXAMPLES) -> tuple[list[np.ndarray], np.ndarray, str]:
    """Model inputs of up to `limit` validation examples in batches, their class indices, the input's name."""
    if is_drawings(run.config):
        prep = Preprocessing.from_config(run.config.data, raw_handling(run))
        drawings = validation_drawings(run.config, limit=limit, raw=prep.raw)
        classes = {w: k for k, w in enumerate(run.classes())}
        labels = np.array([classes[d.word] for d in drawings], np.int64)
        batches = [prep.to_input(drawings[a:a + BATCH]) for a in range(0, len(drawings), BATCH)]
        return batches, labels, prep.input_name
    images, labels = validation_set(run, limit)
    prep = ImagePreprocessing.from_config(run.config.data)
    batches = [prep.to_input(images[a:a + BATCH]) for a in range(0, len(images), BATCH)]
    return batches, np.asarray(labels, np.int64), "image"


def score(outputs: np.ndarray, labels: np.ndarray, task: str) -> tuple[str, float]:
    """(metric name, value) of a model's raw outputs on labelled examples (see the module doc)."""
    if task == "doodle":
        return "map3", map_at_k_scores(labels, outputs, 3)
    if task == "classifier":
        return "accuracy", accuracy(labels, outputs.argmax(axis=1))
    emb = outputs / np.maximum(np.linalg.norm(outputs, axis=1, keepdims=True), 1e-12)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    has_mate = np.array([(labels == y).sum() > 1 for y in labels])
    if not has_mate.any():
        raise NnlabError("rank-1 needs two validation images of one class; the split has none")
    return "rank1", float((labels[sims.argmax(axis=1)] == labels)[has_mate].mean())


def _outputs(model_file: Path, batches: list[np.ndarray]) -> np.ndarray:
    session = onnx_session(model_file)
    return np.concatenate([onnx_outputs(session, x) for x in batches])


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name, self.items = name, iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.items, None)
        return None if x is None else {self.name: np.ascontiguousarray(x, np.float32)}


def quantize_model(src: Path, dst: Path, method: str, input_name: str, calibration: list[np.ndarray]) -> None:
    """Write the INT8 version of the float model `src` to `dst` by `method` ("static" or "dynamic")."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static  # heavy
    from onnxruntime.quantization.shape_inference import quant_pre_process  # heavy (sympy): only here

    work = Path(tempfile.mkdtemp(prefix="nnlab-int8-"))
    root = logging.getLogger()
    level = root.level
    # onnxruntime's quantizer warns on the root logger about weights it leaves per-tensor (a 1-D
    # BatchNorm1d weight, "Axis 1 is out-of-range"): expected here, and noise on a command's stderr
    root.setLevel(max(level, logging.ERROR))
    try:
        pre = work / "pre.onnx"
        try:  # shape inference and graph fusions first, as onnxruntime recommends; optional
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - a model it cannot pre-process is quantized as exported
            shutil.copyfile(src, pre)
        if method == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=_DYNAMIC_OPS)
        else:
            quantize_static(str(pre), str(dst), _Calibration(input_name, calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)
        shutil.rmtree(work, ignore_errors=True)


def latencies_ms(models: dict[str, Path], x: np.ndarray, rounds: int = 7) -> dict[str, float]:
    """The best of `rounds` timings of one batch per model, in milliseconds (one onnxruntime thread,
    warmed up), the models interleaved so that a change of the machine's load hits them alike."""
    sessions = {name: onnx_session(f) for name, f in models.items()}
    best = dict.fromkeys(models, float("inf"))
    for session in sessions.values():
        onnx_outputs(session, x)
    for _ in range(rounds):
        for name, session in sessions.items():
            t = time.perf_counter()
            onnx_outputs(session, x)
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: v * 1000 for name, v in best.items()}


def quantize_export(folder: Path, run: Run, method: str = "auto", max_drop: float = 0.01,
                    limit: int = MAX_EXAMPLES) -> QuantizeReport:
    """Replace the float model.onnx of an export being written in `folder` by its INT8 version, after
    scoring both on the run's validation split; QuantizationDropError (nothing replaced) when the
    INT8 score is more than `max_drop` below the float one. method "auto" quantizes both ways and keeps
    the faster model (a batch of validation inputs, timed here) of those within `max_drop`. Records
    the report in preprocessing.json."""
    if method not in METHODS:
        raise NnlabError(f"--quantize-method {method!r}: expected one of {', '.join(METHODS)}")
    start = time.perf_counter()
    info_file, model_file = folder / "preprocessing.json", folder / "model.onnx"
    info = json.loads(info_file.read_text())
    task = str(info.get("task") or "doodle")
    batches, labels, input_name = validation_batches(run, limit)
    if not len(labels):
        raise NnlabError(f"{run.path}: no validation examples to calibrate and score the INT8 model on")
    calib = _calibration_batches(batches)
    metric, float_score = score(_outputs(model_file, batches), labels, task)
    timed = batches[0][:TIMED_BATCH]
    with tempfile.TemporaryDirectory(prefix="nnlab-int8-") as work:
        found = {}
        for m in (("static", "dynamic") if method == "auto" else (method,)):
            f = Path(work) / f"model.{m}.onnx"
            quantize_model(model_file, f, m, input_name, calib if m == "static" else [])
            found[m] = {"file": f, "score": score(_outputs(f, batches), labels, task)[1], "ms": None}
        if method == "auto":
            timings = latencies_ms({"float": model_file} | {m: c["file"] for m, c in found.items()}, timed)
            for m, c in found.items():
                c["ms"] = timings[m]
        ok = [m for m, c in found.items() if float_score - c["score"] <= max_drop]
        best = min(ok, key=lambda m: found[m]["ms"] or 0.0) if ok else max(found, key=lambda m: found[m]["score"])
        chosen = found[best]
        report = QuantizeReport(
            method=best, metric=metric, float_score=float_score, int8_score=chosen["score"],
            drop=float_score - chosen["score"], max_drop=max_drop, examples=len(labels),
            calibration_examples=sum(map(len, calib)) if best == "static" else 0,
            float_bytes=model_file.stat().st_size, int8_bytes=chosen["file"].stat().st_size,
            seconds=time.perf_counter() - start)
        if not ok:
            raise QuantizationDropError(
                f"INT8 ({best}) validation {metric} {report.int8_score:.4f} against {float_score:.4f} for the "
                f"float model: a drop of {report.drop:.4f} > --max-drop {max_drop:g}; nothing was written "
                "(export without --quantize, try another --quantize-method, or allow a larger --max-drop)")
        candidates = {m: {"score": c["score"], "batch_ms": c["ms"]} for m, c in found.items()}
        if method == "auto":
            candidates["float"] = {"score": float_score, "batch_ms": timings["float"]}
        shutil.copyfile(chosen["file"], model_file)
    info["quantization"] = asdict(report) | {
        "dtype": "int8", "requested": method, "candidates": candidates, "timed_batch": len(timed),
        "note": f"model.onnx is the INT8 model; scores are {metric} on {len(labels)} validation examples "
                "(the static calibration's among them); batch_ms: the best of 7 interleaved timings on one thread"}
    info_file.write_text(json.dumps(info, indent=2) + "\n")
    return report


def _calibration_batches(batches: list[np.ndarray]) -> list[np.ndarray]:
    """The first validation batches, up to CALIBRATION examples."""
    out, n = [], 0
    for x in batches:
        if n >= CALIBRATION:
            break
        out.append(x)
        n += len(x)
    return out


def describe(report: QuantizeReport | dict[str, Any]) -> str:
    """One line: method, float vs INT8 metric, drop and size."""
    r = asdict(report) if isinstance(report, QuantizeReport) else report
    return (f"INT8 ({r['method']}): validation {r['metric']} {r['int8_score']:.4f} (float {r['float_score']:.4f}, "
            f"drop {r['drop']:+.4f}, max {r['max_drop']:g}) on {r['examples']} examples; "
            f"model {r['float_bytes'] / 1e6:.2f} MB -> {r['int8_bytes'] / 1e6:.2f} MB")
