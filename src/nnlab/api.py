"""The Python API, for notebooks and scripts; the CLI calls the same functions (one path, not two).

    import nnlab
    run = nnlab.fit("recipes/digits-lenet.toml", overrides={"train.epochs": 3})
    run.metrics["test"]["accuracy"]; run.history_frame(); run.plot_history()
    run.predict(images).labels
    result = nnlab.study("recipes/digits-lenet.toml", grid={"adam": {}, "sgd": {"optim.name": "sgd"}}, seeds=2)
    result.variants, result.pairwise

A config is a TOML path, a dict (the TOML's structure) or an `ExperimentConfig`; overrides are
`"section.key=value"` strings (as `--set`) or a dict of dotted keys to values.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnlab.config import ExperimentConfig, load_config, save_config, set_key, validate
from nnlab.datasets.kinds import is_drawings
from nnlab.datasets.user import UserData, as_images
from nnlab.errors import ConfigError, NnlabError
from nnlab.fileio import atomic_write_bytes
from nnlab.evaluation.evaluate import evaluate_run
from nnlab.inference.kaggle.drawing_rows import read_drawing_rows
from nnlab.inference.kaggle.submission import predict_drawings
from nnlab.inference.models.doodle import drawing_arrays
from nnlab.inference.predict import predict_images, read_image_inputs
from nnlab.models.registry import model_name_for, register_model  # noqa: F401  (nnlab.register_model)
from nnlab.ingest.image_files import read_image
from nnlab.metrics import confusion_matrix
from nnlab.progress import plural
from nnlab.runs import plots
from nnlab.runs import run as rundir
from nnlab.strokes.drawing import Drawing, PackedSource, StrokeBatch
from nnlab.studies.execute import StudyOutcome, run_study
from nnlab.studies.plan import plan_study
from nnlab.studies.report import format_tables
from nnlab.training import fit as train
from nnlab.training.callbacks import Callback, StopTraining  # noqa: F401  (nnlab.Callback, nnlab.StopTraining)
from nnlab.training.lr_find import LRFindResult, lr_find_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # for the annotations only

ConfigLike = str | os.PathLike | Mapping[str, Any] | ExperimentConfig
Overrides = Sequence[str] | Mapping[str, Any] | None


def make_config(config: ConfigLike, overrides: Overrides = None) -> ExperimentConfig:
    """A validated experiment from a TOML path, a dict or a config, with overrides applied."""
    if isinstance(overrides, Mapping):
        typed, strings = dict(overrides), []
    elif isinstance(overrides, str):  # one "section.key=value", not its characters
        typed, strings = {}, [overrides]
    elif overrides is None or (isinstance(overrides, Sequence) and all(isinstance(o, str) for o in overrides)):
        typed, strings = {}, list(overrides or [])
    else:
        raise ConfigError(f"overrides: expected 'section.key=value' strings or a dict of them, got {overrides!r}")
    if not isinstance(config, (str, os.PathLike, Mapping, ExperimentConfig)):
        raise ConfigError(f"config: expected a TOML file's path, a dict or an ExperimentConfig, got "
                          f"{type(config).__name__} {config!r}"[:300])
    if isinstance(config, ExperimentConfig):
        cfg = load_config(None, strings, base=config.model_dump(mode="json", exclude_none=True))
    elif isinstance(config, Mapping):
        cfg = load_config(None, strings, base=dict(config))
    else:
        cfg = load_config(config, strings)
    if typed:
        raw = cfg.model_dump(mode="json", exclude_none=True)
        for key, value in typed.items():
            set_key(raw, key, value, f"override {key!r}")
        cfg = validate(raw, str(config) if isinstance(config, (str, os.PathLike)) else "config")
    return cfg


@dataclass
class Predictions:
    """Probabilities of inputs, with the class names: `.labels` (top-1), `.top(k)`, `.probs` (N, classes)."""

    ids: list[str]
    probs: np.ndarray
    classes: list[str]

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probs.argmax(1)]

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per input, the k most probable classes with their probabilities."""
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row] for row, p in zip(order, self.probs, strict=True)]

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        shown = ", ".join(f"{i}: {label}" for i, label in list(zip(self.ids, self.labels, strict=True))[:5])
        return f"Predictions({len(self)} inputs; {shown}{', ...' if len(self) > 5 else ''})"


class TrainedRun:
    """The API's handle on a run directory (finished or not): its config, metrics, history, predictions and
    plots. `runs.run.Run` is the directory itself, as training writes it; this reads it and predicts with it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.dir = rundir.Run.open(path)

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def config(self) -> ExperimentConfig:
        return self.dir.config

    @property
    def classes(self) -> list[str]:
        return self.dir.classes()

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json ({} while the run has not finished)."""
        return self.dir.read_json("metrics.json") if (self.path / "metrics.json").is_file() else {}

    @property
    def history(self) -> list[dict[str, float]]:
        """One dict per finished epoch (history.csv)."""
        return self.dir.history()

    def history_frame(self):
        """The history as a pandas DataFrame indexed by epoch (needs pandas)."""
        import pandas as pd  # heavy, optional: only this method needs pandas

        frame = pd.DataFrame(self.history)
        return frame.astype({"epoch": int}).set_index("epoch") if len(frame) else frame

    def predict(self, inputs: Any) -> Predictions:
        """Predict images (a path to an image, a folder or an .npz; an array (H, W[, C]) or (N, H, W[, C]),
        C = 1, 3 or 4, a 3-D array with such a last axis being one image;
        a list of arrays or paths) or, for a drawing run, `Drawing`s, drawings as lists of strokes (Google's
        nested lists [[x...], [y...]] or raw [[x...], [y...], [t...]], as the server takes them, or (n, 2|3)
        NumPy point arrays) or a drawings file;
        preprocessed exactly as `nnlab predict` does."""
        if is_drawings(self.config):
            ids, source = _drawing_inputs(inputs)
            return Predictions(ids, predict_drawings(self.dir, source), self.classes)
        ids, images = _image_inputs(inputs)
        return Predictions(ids, predict_images(self.dir, images), self.classes)

    def evaluate(self, split: str | None = None) -> dict[str, Any]:
        """Metrics of the best checkpoint on a split of the run's own data (as `nnlab eval`; default test
        where there is one, else val: the result's "split" says which)."""
        return evaluate_run(self.path, split=split)

    def plot_history(self) -> Figure:
        """Loss and the main metric per epoch (a matplotlib figure; Jupyter shows it inline)."""
        return plots.history_figure(self.history, self.config.eval.main_metric)

    def plot_confusion(self, split: str | None = None) -> Figure:
        """The confusion of a split's saved predictions (default: the split metrics.json's confusion used)."""
        split = split or self.metrics.get("confusion_split", "test")
        ids, labels, probs = _saved_predictions(self.path / "predictions" / f"{split}.csv", self.classes)
        cm = confusion_matrix(labels, probs.argmax(1), len(self.classes))
        return plots.confusion_figure(cm, self.classes, split)

    def __repr__(self) -> str:
        m = self.metrics
        final = "test" if "test" in m else "val"
        metric = self.config.eval.main_metric
        score = f", {final} {metric} {m[final][metric]:.4f}" if metric in m.get(final, {}) else ""
        return f"TrainedRun({str(self.path)!r}, {len(self.history)} epochs{score})"


def fit(config: ConfigLike, overrides: Overrides = None, out: str | os.PathLike | None = None,
        announce: Callable[[Path], None] | None = None, echo: bool = True, *, model: Any = None,
        train_data: Any = None, val_data: Any = None, test_data: Any = None, classes: Sequence[str] | None = None,
        callbacks: Sequence[Callback] = (), overwrite: bool = False) -> TrainedRun:
    """Train an experiment into a new run directory (default runs/<name>-<timestamp>) and return it.

    Prints one line per epoch (also in RUN/train.log) unless `echo` is False; `announce(path)` is called
    with the run directory before training starts. `overwrite=True` replaces a finished or interrupted run
    at `out` (a notebook cell run again); without it such an `out` is refused.

    Your own parts (docs/python-api.md): `model` a model name, a builder function or class
    (`@nnlab.register_model`), or an `nn.Module`; `train_data` (and `val_data`, `test_data`) a torch
    Dataset of (image, label) or arrays (X, y), kept in the run directory (`classes` names integer labels);
    `callbacks` `nnlab.Callback`s called at the start, after each step and epoch, and at the end."""
    cfg = make_config(config, overrides)
    if model is not None:
        cfg = make_config(cfg, {"model.name": model_name_for(model)})
    given = UserData.from_inputs(train_data, val_data, test_data, classes) if train_data is not None else None
    if given is None and (val_data is not None or test_data is not None):
        raise NnlabError("fit: val_data or test_data without train_data")
    if given is not None:
        cfg = given.config(cfg)
    if overwrite and out is not None:
        rundir.remove_run(Path(out))

    def on_create(run: rundir.Run) -> None:
        if given is not None:  # the data goes into the run before anything reads it
            run.config = given.write(run.path, run.config)
            save_config(run.config, run.path / "config.toml")
        if announce is not None:
            announce(run.path)

    try:
        run = train(cfg, out=out, announce=on_create, echo=echo, callbacks=list(callbacks))
    except NnlabError as exc:
        raise _naming(exc, config) from exc
    return TrainedRun(run.path)


def distill(teachers: Sequence[str | os.PathLike | TrainedRun], config: ConfigLike, overrides: Overrides = None,
            out: str | os.PathLike | None = None, temperature: float | None = None, alpha: float | None = None,
            announce: Callable[[Path], None] | None = None, echo: bool = True) -> TrainedRun:
    """Train the student `config` (with `overrides`) from its labels and the `teachers`' softened probabilities
    (run directories or runs; the same model input as the student) into an ordinary run directory.

    `temperature` and `alpha` default to the config's `train.distill` or 4 and 0.5; the teachers (absolute
    paths) and both settings are recorded in the run's config.toml and metrics.json (`distill`)."""
    paths = [str(t.path if isinstance(t, TrainedRun) else Path(t).resolve()) for t in teachers]
    if not paths:
        raise NnlabError("distill: name at least one teacher run")
    for path in paths:
        rundir.Run.open(path)  # a folder that is not a run answers before the student's run exists
    cfg = make_config(config, overrides)
    raw = cfg.model_dump(mode="json", exclude_none=True)
    spec = raw["train"].get("distill") or {}
    spec |= {"teachers": paths} | ({"temperature": temperature} if temperature is not None else {}) | (
        {"alpha": alpha} if alpha is not None else {})
    raw["train"]["distill"] = spec
    return fit(validate(raw, str(config) if isinstance(config, (str, os.PathLike)) else "config"), out=out,
               announce=announce, echo=echo)


def _naming(exc: NnlabError, config: ConfigLike) -> NnlabError:
    """The error with the config file in front, as the checks made while loading it give it."""
    source = str(config) if isinstance(config, (str, os.PathLike)) else None
    if source is None or str(exc).startswith(source):
        return exc
    return type(exc)(f"{source}: {exc}")


def load_run(path: str | os.PathLike) -> TrainedRun:
    """Open a run directory (finished or not)."""
    return TrainedRun(path)


def resume(run: TrainedRun | str | os.PathLike, epochs: int | None = None, echo: bool = True,
           callbacks: Sequence[Callback] = ()) -> TrainedRun:
    """Continue a run where its last checkpoint left it; `epochs` extends (or shortens) the plan to that many
    epochs in all, re-planning the schedule and recording the new count in its config.toml.
    A finished run that is not extended is left as it is (with a line saying so). `callbacks` as `fit`'s."""
    d = rundir.Run.open(run.path if isinstance(run, TrainedRun) else run)
    finished = (d.path / "metrics.json").is_file()
    done = len(d.history())
    stopped = finished and bool(d.read_json("metrics.json").get("stopped_early"))
    # an early-stopped run extended to its own plan trains the epochs early stopping skipped
    extend = epochs is not None and (epochs != d.config.train.epochs or (stopped and epochs > done))
    if extend:
        if isinstance(epochs, bool) or not isinstance(epochs, int):
            raise NnlabError(f"resume: epochs must be a whole number, got {epochs!r}")
        if epochs < done:
            raise NnlabError(f"{d.path}: --epochs {epochs}: the run already has {done} epochs")
        raw = d.config.model_dump(mode="json", exclude_none=True)
        raw["train"]["epochs"] = epochs
        extended = validate(raw, f"{d.path}/config.toml with --epochs {epochs}")
    elif finished:
        if echo:
            print(_finished_note(d, done), flush=True)
        return TrainedRun(d.path)
    rundir.check_inputs_exist(d.config, str(d.path))  # before a file changes
    saved: dict[str, bytes] = {}
    if extend:
        saved = {name: (d.path / name).read_bytes() for name in ("config.toml", "metrics.json")
                 if (d.path / name).is_file()}
        d.config = extended
        save_config(d.config, d.path / "config.toml")
        (d.path / "metrics.json").unlink(missing_ok=True)
    try:
        train(d.config, resume_run=d, echo=echo, callbacks=list(callbacks), restart_patience=extend)
    except BaseException:
        if saved and len(d.history()) == done:  # not one new epoch: the run is put back as it was
            for name, data in saved.items():
                atomic_write_bytes(d.path / name, data)
        raise
    return TrainedRun(d.path)


def _finished_note(d: rundir.Run, done: int) -> str:
    """Why a finished run has nothing to resume (the whole plan, or early stopping) and how to train more."""
    planned = d.config.train.epochs
    how = f"train more with `nnlab resume {d.path} --epochs N`"
    if d.read_json("metrics.json").get("stopped_early"):
        return (f"{d.path} is finished: early stopping ended it after {plural(done, 'epoch')} of {planned} "
                f"(val_{d.config.eval.main_metric} did not improve for {d.config.train.early_stop_patience} epochs); "
                f"nothing to resume ({how}, N > {done}: its patience is counted afresh)")
    return f"{d.path} is finished ({plural(done, 'epoch')} of {planned}); nothing to resume ({how})"


def lr_find(config: ConfigLike, overrides: Overrides = None, out: str | os.PathLike | None = None,
            **options: Any) -> LRFindResult:
    """Leslie Smith's range test on the configured model and data: writes lr_find.png and lr_find.json
    (default runs/<name>-lr-find/) and returns the curve with `.steepest`, `.valley` and `.suggestion`.
    `options`: start_lr, end_lr, steps, beta (smoothing), diverge (stop at this multiple of the best loss)."""
    return lr_find_for(make_config(config, overrides), out, **options)[0]


@dataclass
class StudyResult:
    """A finished study: the variant table and the pairwise tests as data, and its directory."""

    outcome: StudyOutcome

    @property
    def path(self) -> Path:
        return self.outcome.study.out

    @property
    def report(self) -> dict[str, Any]:
        """report.json's content."""
        return self.outcome.report

    @property
    def variants(self) -> list[dict[str, Any]]:
        """One row per variant: mean, std, per-seed values, params, time."""
        return [{"variant": name} | row for name, row in self.report["variants"].items()]

    @property
    def pairwise(self) -> list[dict[str, Any]]:
        """One row per pair of variants: difference, CI, Welch's p, Holm's p, the verdict."""
        return list(self.report["pairwise"])

    @property
    def failed(self) -> list[str]:
        return [f"{c.cell.label}: {c.error}" for c in self.outcome.failed]

    def runs(self, variant: str) -> list[TrainedRun]:
        """The variant's finished or interrupted cells (the failed ones left out)."""
        cells = self.outcome.cells
        return [TrainedRun(c.cell.path) for c in cells if c.cell.variant == variant and c.status != "failed"]

    def _repr_markdown_(self) -> str:
        return format_tables(self.report)

    def __repr__(self) -> str:
        return f"StudyResult({str(self.path)!r})\n{format_tables(self.report)}"


def study(config: ConfigLike, grid: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None,
          seeds: int | Sequence[int] | None = None, overrides: Overrides = None,
          out: str | os.PathLike | None = None, workers: int | None = None,
          announce: Callable[[Any], None] | None = None, executor: str | Executor | None = None) -> StudyResult:
    """Train a grid of variants x seeds (resumable: finished cells are kept) and compare them.

    `grid`: {variant: {dotted key: value}} or `--grid` strings ("NAME=key=value,..."); default the config's
    study.grid. `seeds`: K (seeds 0..K-1) or a list. `announce(study)` is called once planned.
    `executor`: where the cells run, "pool" (default), "local", "slurm" or "debug" (submitit), or any
    `concurrent.futures.Executor`."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise NnlabError(f"study: workers = {workers!r}: give a whole number of parallel cells >= 1 (or None)")
    strings = [] if grid is None or isinstance(grid, Mapping) else list(grid)
    base = make_config(config, overrides)
    raw = base.model_dump(mode="json", exclude_none=True)
    if isinstance(grid, Mapping):
        raw.setdefault("study", {})["grid"] = {name: dict(v) for name, v in grid.items()}
    if seeds is not None and not isinstance(seeds, int):
        raw.setdefault("study", {})["seeds"] = list(seeds)
    source = str(config) if isinstance(config, (str, os.PathLike)) else "config"
    plan = plan_study(validate(raw, source), (), strings, seeds if isinstance(seeds, int) else None, out, workers,
                      source=source, executor=executor if isinstance(executor, str) else None)
    if announce is not None:
        announce(plan)
    return StudyResult(run_study(plan, executor=None if isinstance(executor, str) else executor))


# --------------------------------------------------------------------------- inputs


CHANNEL_COUNTS = (1, 3, 4)  # the last axis of one image: grey, RGB, RGBA


def _image_inputs(inputs: Any) -> tuple[list[str], list[np.ndarray]]:
    """Ids and images of what `TrainedRun.predict` was given. A 3-D array whose last axis is 1, 3 or 4
    is one image (H, W, C); any other 3-D array is a stack of grey images (N, H, W)."""
    if isinstance(inputs, (str, os.PathLike)):
        return read_image_inputs(Path(inputs))
    if type(inputs).__module__.startswith("torch"):
        inputs = inputs.detach().cpu().numpy()  # a tensor, as a Dataset holds them
    if isinstance(inputs, np.ndarray) and inputs.ndim >= 2:
        first = inputs.ndim == 4 and inputs.shape[1] in (1, 3) and inputs.shape[-1] not in CHANNEL_COUNTS
        if first or inputs.dtype.kind == "f":  # (N, C, H, W) or 0..1 floats, as train_data takes them
            inputs = as_images(inputs if inputs.ndim >= 3 else inputs[None], "predict")
    if isinstance(inputs, np.ndarray):
        inputs = _numbers(inputs, "the array")
        one = inputs.ndim == 2 or inputs.ndim == 3 and inputs.shape[-1] in CHANNEL_COUNTS
        if not (one or inputs.ndim in (3, 4)) or not inputs.size:
            raise NnlabError(f"predict: an array of shape {inputs.shape} is not an image (H, W[, C]) or a stack of "
                             "them (N, H, W[, C]); C is 1, 3 or 4 (RGBA: alpha is dropped)")
        stack = inputs[None] if one else inputs
        return [str(i) for i in range(len(stack))], list(stack)
    if not isinstance(inputs, (list, tuple)):
        raise NnlabError(f"predict: expected an image path, an array or a list of them, got {type(inputs).__name__}")
    items = list(inputs)
    if not items:
        raise NnlabError("predict: no images given (an empty list)")
    images = [read_image(Path(x)) if isinstance(x, (str, os.PathLike)) else _numbers(x, f"image {i}")
              for i, x in enumerate(items)]
    ids = [str(x) if isinstance(x, (str, os.PathLike)) else str(i) for i, x in enumerate(items)]
    return ids, images


def _numbers(x: Any, what: str) -> np.ndarray:
    """`x` as an array of pixel numbers (bool, integers or floats); anything else is one NnlabError."""
    try:
        array = np.asarray(x)
    except Exception as exc:  # an array-like that cannot be one (ragged lists, a failing __array__)
        raise NnlabError(f"predict: {what} is not an array of pixels ({type(exc).__name__}: {exc})"[:300]) from None
    if array.dtype.kind not in "biuf":
        raise NnlabError(f"predict: {what} holds {array.dtype} values; an image holds numbers (pixels)")
    return array


def _drawing_inputs(inputs: Any) -> tuple[list[str], Any]:
    if isinstance(inputs, (str, os.PathLike)):
        rows = read_drawing_rows(inputs)
        return [rows.ids[i] for i in rows.parsed], rows.drawings  # rows that did not parse are left out
    items = [inputs] if isinstance(inputs, Drawing) else list(inputs)
    if not items:
        raise NnlabError("predict: no drawings given")
    ids = [str(d.key_id) if isinstance(d, Drawing) and d.key_id >= 0 else str(i) for i, d in enumerate(items)]
    drawings = [drawing_arrays(d, f"drawing {i}") for i, d in enumerate(items)]
    widths = {a.shape[1] for d in drawings for a in d}
    if len(widths) > 1:  # a batch is simplified or raw, as a file is (the readers' mixed_format)
        raise NnlabError("predict: simplified ([x, y]) and raw ([x, y, t]) strokes mixed; "
                         "predict each kind in a call of its own")
    return ids, PackedSource(StrokeBatch.from_drawings(drawings))


def _saved_predictions(path: Path, classes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, true labels and probabilities from predictions/<split>.csv."""
    if not path.is_file():
        raise NnlabError(f"{path}: no saved predictions (has the run finished?)")
    index = {c: i for i, c in enumerate(classes)}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "label" not in rows[0]:
        raise NnlabError(f"{path}: no true labels to build a confusion matrix from")
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float32)
    return [r["id"] for r in rows], np.array([index[r["label"]] for r in rows]), probs
