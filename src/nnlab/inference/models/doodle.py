"""A trained doodle model ready to guess: preprocessing, its backend (`backends`: torch or onnxruntime),
and validation drawings to show.

    model = load_doodle_model("runs/doodles-...")      # a run directory (torch)
    model = load_doodle_model("export/")               # `nnlab export` output (onnxruntime)
    model.guess([strokes], top_k=3)                    # [[("cat", 0.81), ("dog", 0.07), ...]]

Drawings arrive as lists of (n, 2) or (n, 3) stroke arrays. `prepare_strokes` keeps Google's
simplified drawings (integers in 0..255, no time) as they are and simplifies anything else
(raw screen coordinates, with or without t) with Google's algorithm, so every drawing reaches
`to_model_input`, the one preprocessing of drawings, in the frame the model was trained on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnlab import metrics
from nnlab.datasets.kinds import drawing_kinds, is_drawings
from nnlab.datasets.strokes import stroke_splits, stroke_store, to_model_input, to_sequence_input
from nnlab.errors import DataError, ModelError, NnlabError
from nnlab.inference.models.backends import (
    EXPORT_FILES,
    Backend,
    OnnxBackend,
    TorchBackend,
    is_export_dir,
    read_export_info,
)
from nnlab.ingest.chunks import read_drawings
from nnlab.ingest.reasons import REASONS, raw_points_in_range
from nnlab.runs.run import Run
from nnlab.runs.trained import raw_handling
from nnlab.strokes.drawing import Drawing
from nnlab.strokes.render import ENCODINGS, default_line_width
from nnlab.strokes.sequence import FEATURES
from nnlab.strokes.simplify import frame_strokes, simplify_drawing, simplify_strokes

SAMPLES_FILE = "samples.ndjson"


@dataclass(frozen=True)
class Preprocessing:
    """How a drawing becomes the model's input: `to_model_input` with these arguments (pixels / 255,
    no mean or std), or for a stroke-sequence model (`input = "sequence"`) `to_sequence_input`."""

    image_size: int
    encoding: str
    line_width: float
    padding: float
    channels: int
    antialias: bool = True
    input: str = "image"  # or "sequence": (batch, points, 5) point sequences
    max_points: int = 256
    raw: str = "simplify"  # raw drawings: "simplify" (trained on simplified data) or "frame" (on a raw store)

    @classmethod
    def from_config(cls, data: Any, raw: str = "simplify") -> Preprocessing:
        """From a run's `data` section (the default line width resolved to its value) and how it takes raw
        drawings (`nnlab.runs.trained.raw_handling`)."""
        sequence = data.input == "sequence"
        return cls(image_size=int(data.image_size), encoding=str(data.encoding),
                   line_width=float(data.line_width or default_line_width(data.image_size)),
                   padding=float(data.padding), channels=FEATURES if sequence else ENCODINGS[data.encoding],
                   input=str(data.input), max_points=int(data.max_points), raw=raw)

    @classmethod
    def from_json(cls, info: dict[str, Any], source: str = "preprocessing.json") -> Preprocessing:
        try:
            d = info["drawing"]
            return cls(image_size=int(d["image_size"]), encoding=str(d["encoding"]),
                       line_width=float(d["line_width"]), padding=float(d["padding"]),
                       channels=int(d["channels"]), antialias=bool(d.get("antialias", True)),
                       input=str(d.get("input", "image")), max_points=int(d.get("max_points", 256)),
                       raw=str(d.get("raw", "simplify")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: missing or invalid drawing preprocessing field ({exc})") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_name(self) -> str:
        """The ONNX model's input: "image", or "sequence" for stroke-sequence models."""
        return "sequence" if self.input == "sequence" else "image"

    @property
    def input_shape(self) -> list[int | str]:
        """The input's shape as preprocessing.json states it (named axes are dynamic)."""
        if self.input == "sequence":
            return ["batch", "points", self.channels]
        return ["batch", self.channels, self.image_size, self.image_size]

    def random_input(self, rng: np.random.Generator, n: int = 3) -> np.ndarray:
        """`n` random inputs of the right kind (random pixels, or sequences of random scribbles)."""
        if self.input == "sequence":
            return self.to_input([[rng.integers(0, 256, size=(int(rng.integers(2, 40)), 2))] for _ in range(n)])
        return rng.random((n, self.channels, self.image_size, self.image_size), dtype=np.float32)

    def to_input(self, drawings: Sequence[Drawing | Sequence[np.ndarray]]) -> np.ndarray:
        """float32 (B, C, H, W) in [0, 1], or (B, points, 5) sequences."""
        if self.input == "sequence":
            return to_sequence_input(list(drawings), self.max_points).numpy()
        return to_model_input(list(drawings), size=self.image_size, encoding=self.encoding,
                              line_width=self.line_width, antialias=self.antialias,
                              padding=self.padding).numpy()


def prepare_strokes(strokes: Sequence[np.ndarray | Sequence[Sequence[float]]],
                    max_ink: int | None = None, raw: str = "simplify") -> list[np.ndarray]:
    """Strokes in Google's 0..255 frame, as the model was trained (`raw`, see `Preprocessing`).

    A drawing already simplified (integer x, y in 0..255 and no time) is kept; anything else
    (time present, fractions, coordinates outside 0..255) is raw input and goes through Google's
    simplification (align, scale to 0..255, resample, RDP), or with raw = "frame" only its frame
    (align and scale, time kept). max_ink bounds the cost of simplifying: a drawing with more ink
    (px, once scaled) is resampled more coarsely."""
    arrays = checked_strokes(strokes)
    if is_simplified(arrays):
        return [a.astype(np.int32) for a in arrays]
    if raw == "frame":
        return frame_strokes(arrays)
    return simplify_strokes(arrays, max_points=max_ink)


def checked_strokes(strokes: Sequence[np.ndarray | Sequence[Sequence[float]]]) -> list[np.ndarray]:
    """Strokes as float64 (n, 2|3) arrays; DataError naming the stroke when one is not."""
    arrays = [np.asarray(s, dtype=np.float64) for s in strokes]
    if not arrays:
        raise DataError("the drawing has no strokes")
    if all(a.ndim == 2 and len(a) and a.shape[1] == arrays[0].shape[1] in (2, 3) for a in arrays):
        points = np.concatenate(arrays)  # one check of every point (a request's cost), strokes named only on failure
        if np.isfinite(points).all() and raw_points_in_range(points):
            return arrays
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] not in (2, 3) or len(a) == 0:
            raise DataError(f"stroke {i}: expected (n, 2) or (n, 3) points, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise DataError(f"stroke {i}: a coordinate is NaN or infinite")
        if not raw_points_in_range(a):  # the file readers' rule (a negative time, say), the same words
            raise DataError(f"stroke {i}: {REASONS['out_of_range']}")
    return arrays


def is_simplified(arrays: Sequence[np.ndarray]) -> bool:
    """Whether checked strokes are in Google's simplified form already (x, y integers in 0..255, no t)."""
    if any(a.shape[1] != 2 for a in arrays):
        return False
    xy = np.concatenate(arrays)
    return bool((xy == np.round(xy)).all() and xy.min() >= 0 and xy.max() <= 255)


def check_google_stroke(stroke: Sequence[Sequence[float]]) -> Sequence[Sequence[float]]:
    """One stroke in Google's format, [[x...], [y...]] or [[x...], [y...], [t...]] (what the ndjson files and
    the server take), or a DataError (a ValueError, as pydantic validators raise) saying what is wrong."""
    if type(stroke) is list and 2 <= len(stroke) <= 3 and all(type(c) is list for c in stroke):
        n = len(stroke[0])  # parsed JSON, the server's every request: no ABC checks (half its validation time)
        if n and len(stroke[1]) == n and (len(stroke) == 2 or len(stroke[2]) == n):
            return stroke
    if isinstance(stroke, (str, bytes)) or not isinstance(stroke, Sequence) or len(stroke) not in (2, 3):
        got = f"{len(stroke)} lists" if isinstance(stroke, Sequence) and not isinstance(stroke, str) else repr(stroke)[:40]
        raise DataError(f"a stroke is [[x...], [y...]] or [[x...], [y...], [t...]], got {got}")
    if not all(isinstance(c, (Sequence, np.ndarray)) and not isinstance(c, str) for c in stroke):
        raise DataError("a stroke is [[x...], [y...]] or [[x...], [y...], [t...]]: lists of numbers")
    lengths = [len(c) for c in stroke]
    if lengths[0] == 0:
        raise DataError("a stroke has no points")
    if len(set(lengths)) > 1:
        names = "x, y, t" if len(stroke) == 3 else "x, y"
        raise DataError(f"{names} have different lengths ({', '.join(map(str, lengths))})")
    return stroke


def google_to_arrays(drawing: Sequence[Sequence[Sequence[float]]]) -> list[np.ndarray]:
    """Google's [[x...], [y...](, [t...])] strokes -> (n, 2|3) arrays."""
    return [np.asarray(s, dtype=np.float64).T for s in drawing]


def drawing_arrays(drawing: Any, where: str = "drawing") -> list[np.ndarray]:
    """One drawing as the Python API takes it -> checked (n, 2|3) float arrays: a `Drawing`, NumPy arrays of
    (n, 2|3) points, or Google's strokes as nested lists ([[x...], [y...]] simplified, [[x...], [y...], [t...]]
    raw: the server's and the ndjson files' format). Anything else is a DataError naming `where` and the stroke."""
    if isinstance(drawing, Drawing):
        drawing = drawing.strokes
    if isinstance(drawing, (str, bytes)) or not isinstance(drawing, (Sequence, np.ndarray)):
        raise DataError(f"{where}: expected a list of strokes, got {type(drawing).__name__}")
    arrays = []
    for i, stroke in enumerate(drawing):
        try:
            arrays.append(stroke if isinstance(stroke, np.ndarray) else google_to_arrays([check_google_stroke(stroke)])[0])
        except (DataError, TypeError, ValueError) as exc:
            raise DataError(f"{where}, stroke {i}: {exc}") from None
    try:
        return checked_strokes(arrays)
    except (DataError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: {exc}") from None


def arrays_to_google(strokes: Sequence[np.ndarray]) -> list[list[list[float]]]:
    """(n, 2|3) arrays -> Google's [[x...], [y...]] lists (integers stay integers)."""
    return [np.asarray(s).T.tolist() for s in strokes]


class DoodleModel:
    """A loaded doodle model: its backend (`backends.Backend`, torch or onnxruntime), classes and
    preprocessing; thread-safe, so one instance serves every request."""

    def __init__(self, runtime: Backend, path: Path, name: str, prep: Preprocessing, samples: SampleSource) -> None:
        self.runtime = runtime
        self.path = path
        self.name = name
        self.classes = runtime.classes
        self.prep = prep
        self.samples = samples

    @property
    def backend(self) -> str:
        """"torch" or "onnxruntime"."""
        return self.runtime.name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The model's logits for a preprocessed batch (`Preprocessing.to_input`)."""
        return self.runtime.outputs(batch)

    def probabilities(self, drawings: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        """Softmax probabilities (B, classes) for simplified drawings."""
        return self.runtime.interpret(self.logits(self.prep.to_input(drawings)))

    def guess(self, drawings: Sequence[Sequence[np.ndarray]], top_k: int = 3) -> list[list[tuple[str, float]]]:
        """The top_k (word, probability) pairs of each simplified drawing, best first."""
        return [self.top_k(p, top_k) for p in self.probabilities(drawings)]

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """(word, probability) of the k most probable classes of one probability row, best first."""
        return top_classes(self.classes, probs, k)

    def warm_up(self) -> None:
        """One raw and one simplified drawing through the whole path, so that the JIT
        compilation (or cache load) and first allocations do not land on a user's request."""
        raw = [np.array([[10.0, 10.0, 0.0], [60.5, 80.0, 16.0], [120.0, 30.0, 33.0]])]
        self.guess([prepare_strokes(raw, raw=self.prep.raw), prepare_strokes([np.array([[0, 0], [255, 255]])])], 1)

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.runtime.precision, "model": self.name,
                "classes": len(self.classes), "preprocessing": self.prep.to_json()}


def top_classes(classes: Sequence[str], probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    """(class, probability) of the k most probable classes of one probability row, best first."""
    top = metrics.top_k(probs[None, :], min(k, len(classes)))[0]
    return [(classes[j], float(probs[j])) for j in top]


def load_doodle_model(path: str | os.PathLike, threads: int | None = None) -> DoodleModel:
    """A run directory (torch, best checkpoint) or an `nnlab export` directory (onnxruntime)."""
    path = Path(path)
    if not path.is_dir():
        raise NnlabError(f"{path}: not found (give a run directory or an `nnlab export` directory)")
    if is_export_dir(path):
        return _load_export(path, threads)
    if (path / "config.toml").is_file():
        return _load_run(path, threads)
    raise NnlabError(f"{path}: neither a run directory (config.toml) nor an export directory "
                     f"({', '.join(EXPORT_FILES)})")


def _load_run(path: Path, threads: int | None) -> DoodleModel:
    run = Run.open(path)
    check_stroke_run(run)
    raw = raw_handling(run)
    return DoodleModel(TorchBackend.from_run(run, threads), path=path, name=run.config.model.name,
                       prep=Preprocessing.from_config(run.config.data, raw),
                       samples=SampleSource(lambda: validation_drawings(run.config, raw=raw)))


def _load_export(path: Path, threads: int | None) -> DoodleModel:
    info = read_export_info(path)
    samples_file = path / SAMPLES_FILE
    return DoodleModel(OnnxBackend.from_export(path, threads, info), path=path, name=str(info.get("model", "?")),
                       prep=Preprocessing.from_json(info, str(path / "preprocessing.json")),
                       samples=SampleSource(lambda: _read_samples(samples_file)))


def check_stroke_run(run) -> None:
    """Only models trained on drawings can guess drawings."""
    if not is_drawings(run.config):
        raise NnlabError(f"{run.path}: trained on data.kind = {run.config.data.kind!r}; the doodle demo needs a "
                         f"model trained on drawings ({' or '.join(drawing_kinds())})")
    if run.config.engine != "torch":
        raise NnlabError(f"{run.path}: a {run.config.engine} run; only torch runs can be served or exported")


class SampleSource:
    """Validation drawings, loaded on first use (once, whichever thread asks first)."""

    def __init__(self, load) -> None:
        self._load = load
        self._drawings: list[Drawing] | None = None
        self._lock = threading.Lock()

    def drawings(self) -> list[Drawing]:
        with self._lock:
            if self._drawings is None:
                self._drawings = self._load()
            return self._drawings

    def prefetch(self) -> None:
        """Load in a background thread now, so the first request does not wait (errors are
        raised again, and reported, on that request)."""
        def load() -> None:
            try:
                self.drawings()
            except Exception:  # noqa: BLE001, S110 - the request that needs them reports it
                pass

        threading.Thread(target=load, name="nnlab-samples", daemon=True).start()


def validation_drawings(cfg, limit: int = 200, seed: int = 0, raw: str = "simplify") -> list[Drawing]:
    """Up to `limit` drawings of the run's validation split (the whole labelled set when the
    split is empty), in the 0..255 frame as the run takes them (`raw`), in a random order fixed by `seed`.

    synth runs regenerate their doodles from the config; strokes runs read their store."""
    if not is_drawings(cfg):
        raise DataError(f"data.kind = {cfg.data.kind!r}: no validation drawings to show")
    store = stroke_store(cfg)
    splits = stroke_splits(cfg, store)
    idx = splits["val"]
    if not len(idx):
        idx = np.concatenate(list(splits.values()))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(idx, size=min(limit, len(idx)), replace=False)) if len(idx) else idx
    drawings = list(store.iter_drawings(pick))
    rng.shuffle(drawings)
    if store.kind == "simplified":
        return drawings
    if raw == "frame":
        return [Drawing(**(vars(dr) | {"strokes": frame_strokes(dr.strokes)})) for dr in drawings]
    return [simplify_drawing(dr) for dr in drawings]


def _read_samples(path: Path) -> list[Drawing]:
    """The drawings of an export's samples.ndjson (none when the file is missing); a bad line is an error."""
    if not path.is_file():
        return []
    return list(read_drawings(path, on_bad="error", dedupe=False))
