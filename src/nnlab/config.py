"""The experiment schema: one TOML file, validated, with `--set section.key=value` overrides.

Every section forbids unknown keys, so a misspelt key fails with one line that names the
key, the file and what is allowed instead of being silently ignored.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nnlab.errors import ConfigError

# --------------------------------------------------------------------------- metric names

#: Direction of every metric name the trainer may monitor (`higher_is_better` also
#: accepts ``val_``/``train_``/``test_`` prefixes and any k, rank or FPR target).
METRICS_HIGHER_IS_BETTER: dict[str, bool] = {
    "loss": False,
    "log_loss": False,
    "accuracy": True,
    "top3_accuracy": True,
    "top5_accuracy": True,
    "map3": True,
    "macro_f1": True,
    "rank1": True,
    "rank5": True,
    "eer": False,
    "roc_auc": True,
    "tpr_at_fpr_0.01": True,
    "tpr_at_fpr_0.001": True,
}
_PATTERNS = [(re.compile(r"top\d+_accuracy|map\d+|rank\d+|tpr_at_fpr_.+"), True)]


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` (e.g. ``val_map3``, ``loss``) is better."""
    base = re.sub(r"^(val|train|test)_", "", name)
    if base in METRICS_HIGHER_IS_BETTER:
        return METRICS_HIGHER_IS_BETTER[base]
    for pattern, direction in _PATTERNS:
        if pattern.fullmatch(base):
            return direction
    raise ConfigError(
        f"unknown metric {name!r}; known: {', '.join(sorted(METRICS_HIGHER_IS_BETTER))} "
        "(optionally prefixed with val_/train_/test_)"
    )



# --------------------------------------------------------------------------- sections


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where the examples come from and how they are split and batched."""

    kind: str = Field("digits", description="data set kind: digits, idx, npz, folder, bitmap, csv, strokes, synth")
    path: str | None = Field(None, description="file or folder of the data set")
    test_path: str | None = Field(None, description="a separate test file (csv kind)")
    download: bool = Field(False, description="fetch the official files when missing (idx kind)")
    dataset: str | None = Field(None, description="which official data set to download: mnist or fashion-mnist")
    images_key: str = "images"
    labels_key: str = "labels"
    shape: list[int] | None = Field(None, description="image shape of flat feature rows (csv kind)")
    header: bool | Literal["auto"] = "auto"
    scale: float | None = Field(None, gt=0, description="largest feature value, mapped to 255 (csv kind)")
    max_per_class: int | None = Field(None, ge=1)
    on_bad: Literal["skip", "error"] = "error"
    image_size: int = Field(28, ge=4, le=1024, description="side of the square model input in pixels")
    channels: Literal[1, 3] = 1
    mean: float = 0.5
    std: float = Field(0.5, gt=0)
    augment: bool = Field(False, description="augment the training split (never val or test)")
    split: Literal["stratified", "identity"] = Field("stratified", description="image sets: by class, or by identity "
                                                     "(open set); stroke data always splits by key_id hash")
    open_set_identities: int | None = Field(None, ge=1, description="identity split: how many identities are held "
                                            "out unseen (default: test_fraction of them)")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1, description="ignored where the source has an official test part")
    batch_size: int = Field(128, ge=1, le=65536)
    eval_batch_size: int | None = Field(None, ge=1, le=65536)
    num_workers: int = Field(0, ge=0, le=64)
    persistent_workers: bool = Field(True, description="keep the loader's worker processes between epochs "
                                     "(num_workers > 0)")
    prefetch_factor: int | None = Field(None, ge=1, le=64, description="batches each worker keeps ready "
                                        "(num_workers > 0; default torch's 2)")
    # Stroke data (Quick, Draw!): rendering and synthetic doodles.
    input: Literal["image", "sequence"] = Field("image", description="stroke data: rendered images, or point "
                                                "sequences for stroke_rnn / stroke_gru")
    max_points: int = Field(256, ge=2, le=100_000, description="sequence input: longer drawings are resampled")
    encoding: Literal["binary", "time-decay", "order-velocity-time", "order-stroke-time"] = "time-decay"
    line_width: float | None = Field(None, gt=0, description="stroke width in output pixels")
    padding: float = Field(0.0, ge=0, lt=0.5, description="margin as a fraction of the image side")
    classes: int | list[str] | None = Field(None, description="synthetic doodle classes: a count or names")
    per_class: int = Field(300, ge=1, description="synthetic drawings per class")
    recognized_only: bool = False
    flip: float = Field(0.0, ge=0, le=1, description="stroke data with augment: probability of mirroring a "
                        "training drawing left-right (most doodles mean the same mirrored; pairs with "
                        "`predict --tta flip`)")


class ModelConfig(Section):
    """A registered builder (`nnlab models`) or any timm model as `timm:<name>`."""

    name: str = "lenet"
    pretrained: bool = Field(False, description="download pretrained timm weights (online only)")
    weights: str | None = Field(None, description="a local state dict (.pt) or .safetensors file to start from")
    hidden: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(default_factory=lambda: [512, 128, 64],
                                                                    description="mlp hidden sizes")
    activation: Literal["relu", "sigmoid", "tanh", "gelu"] = "relu"
    batchnorm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    # Stroke-sequence models (stroke_rnn, stroke_gru; data.input = "sequence").
    conv_filters: list[int] = Field(default_factory=lambda: [48, 64, 96], description="conv1d filters per layer")
    conv_kernels: list[int] = Field(default_factory=lambda: [5, 5, 3], description="conv1d kernel sizes")
    rnn_hidden: int = Field(128, ge=1, le=4096, description="units per direction of each recurrent layer")
    rnn_layers: int = Field(3, ge=1, le=16, description="bidirectional recurrent layers")
    # Metric learning (models/heads.py): backbone features -> dropout -> embedding -> head.
    head: Literal["linear", "arcface", "cosface"] = Field("linear", description="classifier on the embedding")
    embedding_dim: int | None = Field(None, ge=2, le=65536, description="embedding size (None: the backbone's "
                                      "pooled features; set it, or a margin head, for an embedding model)")
    embedding_bn: bool = Field(True, description="BatchNorm1d after the embedding layer")
    margin: float | None = Field(None, ge=0, le=1.5, description="arcface: angle in radians (default 0.5); "
                                 "cosface: cosine (default 0.35)")
    scale: float = Field(30.0, gt=0, le=1024, description="s: logits are s * cosine (margin heads)")
    easy_margin: bool = Field(False, description="arcface: apply the margin only where cos(theta) > 0")
    triplet_weight: float = Field(0.0, ge=0, description="weight of a batch-hard triplet term added to the loss")
    triplet_margin: float = Field(0.2, gt=0, le=2, description="margin of the triplet term (L2 distance "
                                  "of normalised embeddings)")

    @property
    def embedding_model(self) -> bool:
        """Whether the model is backbone -> embedding -> head (see `nnlab.models.heads`)."""
        return self.head != "linear" or self.embedding_dim is not None or self.triplet_weight > 0


class LossConfig(Section):
    name: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Section):
    name: Literal["constant", "step", "cosine", "plateau", "onecycle"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0, le=100000, allow_inf_nan=False, description="linear warm-up (cosine)")
    min_lr: float = Field(0.0, ge=0, description="floor of the cosine schedule")
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step)")
    factor: float = Field(0.5, gt=0, lt=1, description="decay factor (plateau)")
    patience: int = Field(2, ge=0, description="epochs without improvement before a decay (plateau)")


class TrainConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)  # epochs = "15" is an error

    epochs: int = Field(10, ge=1, le=100000)
    steps_per_epoch: int | None = Field(None, ge=1, le=10**8, description="fixed batches per epoch (endless samplers)")
    grad_accum: int = Field(1, ge=1, le=1024)
    clip_grad_norm: float | None = Field(None, gt=0)
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="mixed precision on CUDA; CPU is fp32")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1,
                                description="CPU threads: torch's, or BLAS's for the NumPy engine (default: the library's)")
    freeze_first: int = Field(0, ge=0, description="freeze the first N parameterised layers")
    train_last: int | None = Field(None, ge=1, description="train only the last K parameterised layers")
    early_stop_patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    keep_best: int = Field(1, ge=0, le=100, description="best checkpoints kept besides last.pt")
    channels_last: bool = Field(False, description="NHWC memory layout for the model and its inputs "
                                "(faster convolutions with AMP on CUDA, and depthwise ones on the CPU)")
    compile: bool = Field(False, description="torch.compile the model (needs triton on CUDA, a C++ compiler "
                          "on the CPU); the first steps are slower while it compiles")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode (train.compile)")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="model EMA: evaluate, checkpoint and predict "
                                    "with an exponential moving average of the weights (e.g. 0.999)")
    ema_warmup: bool = Field(True, description="warm the EMA decay up as 1 - (1 + step)^(-2/3), capped at "
                             "train.ema_decay (timm's --model-ema-warmup), so the random initial weights and "
                             "BatchNorm statistics fade out within the first steps instead of 1 / (1 - decay)")
    keep_last: int = Field(0, ge=0, le=1000, description="the last N epochs' weights kept too (epoch-e<k>.pt), "
                           "for `nnlab average --last N`")
    tensorboard: bool = Field(False, description="write TensorBoard events under RUN/tensorboard/")
    tensorboard_every: int = Field(50, ge=1, description="batches between the per-step TensorBoard scalars")


class EvalConfig(Section):
    main_metric: str = Field("accuracy", description="metric on the val split that picks the best checkpoint")
    top_k: int = Field(3, ge=1)
    gallery_per_id: int = Field(1, ge=1, description="open set: the first N images of each unseen identity "
                                "form the gallery, the rest are probes")


class StudyConfig(Section):
    """A grid of variants x seeds run by `nnlab study` (see study.py)."""

    grid: dict[str, dict[str, Any]] = Field(default_factory=dict, description="variant name -> overrides")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    workers: int | None = Field(None, ge=1, description="parallel cells (default: by cores)")
    metric: str = Field("accuracy", description="test metric compared across variants")
    threshold: float = Field(0.01, ge=0, description="a difference smaller than this is 'within' (1 pp)")
    significance: float = Field(0.05, gt=0, lt=1, description="p-value below which a difference is significant")


class ExperimentConfig(Section):
    """One experiment: the root of the TOML file."""

    name: str = Field("experiment", min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    seed: int = Field(0, ge=0)
    engine: Literal["torch", "numpy"] = "torch"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    study: StudyConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        try:
            higher_is_better(self.eval.main_metric)
        except ConfigError as exc:
            raise ValueError(f"eval.main_metric: {exc}") from None
        if self.engine == "numpy" and (self.train.channels_last or self.train.compile):
            raise ValueError("train.channels_last and train.compile apply to the torch engine only; "
                             "remove them or set engine = 'torch'")
        _check_sizes(self)
        if self.data.split == "identity" and (self.engine != "torch" or not self.model.embedding_model):
            raise ValueError("data.split = 'identity' (open-set evaluation) needs an embedding model: engine = "
                             "'torch' and model.embedding_dim set, or model.head = 'arcface' or 'cosface'")
        return self


def _check_sizes(cfg: ExperimentConfig) -> None:
    """What would otherwise fail after an epoch or deep in NumPy/torch: the top-k of the main
    metric, data.classes outside synth, and a first batch or MLP too large for this machine's memory."""
    base = re.sub(r"^(val|train|test)_", "", cfg.eval.main_metric)
    m = re.fullmatch(r"map(\d+)|top(\d+)_accuracy", base)
    if m and int(m.group(1) or m.group(2)) != cfg.eval.top_k:
        raise ValueError(f"eval.main_metric = {cfg.eval.main_metric!r} is computed with eval.top_k = "
                         f"{int(m.group(1) or m.group(2))}, but eval.top_k = {cfg.eval.top_k}; set one to match")
    d = cfg.data
    if d.classes is not None and d.kind != "synth":
        raise ValueError(f"data.classes is for kind = 'synth' only (here kind = {d.kind!r}); remove it")
    if isinstance(d.classes, int) and d.classes < 1 or isinstance(d.classes, list) and not d.classes:
        raise ValueError(f"data.classes: at least 1 class, got {d.classes!r}")
    memory = _memory_bytes()
    if memory is None:
        return
    pixels = d.image_size * d.image_size * (3 if d.kind == "synth" or d.kind == "strokes" else d.channels)
    batch = max(d.batch_size, d.eval_batch_size or 0) * pixels * 4
    if batch > memory // 4:
        raise ValueError(f"data.batch_size = {d.batch_size} at data.image_size = {d.image_size}: one batch takes "
                         f"{batch / 2**30:.1f} GiB of this machine's {memory / 2**30:.1f} GiB; lower one of them")
    sizes = [pixels, *cfg.model.hidden]
    params = sum(a * b for a, b in zip(sizes, sizes[1:]))
    if cfg.model.name == "mlp" or cfg.engine == "numpy":
        if params * 4 * 4 > memory // 2:  # weights, gradients and two optimiser moments
            raise ValueError(f"model.hidden = {cfg.model.hidden}: about {params:,} parameters, more than "
                             f"{memory / 2**30:.1f} GiB of memory can train; lower the hidden sizes")


def _memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a TOML experiment (or start from `base`), apply `section.key=value` overrides, validate."""
    source = str(path) if path is not None else "config"
    raw: dict[str, Any] = copy.deepcopy(base or {})  # overrides must not reach into the caller's dicts
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: arrays or tables nested too deep to be a config") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, source)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is read as TOML, else kept as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    set_key(raw, key.strip(), value, f"--set {item!r}")


def set_key(raw: dict[str, Any], key: str, value: Any, where: str = "config") -> None:
    """Set the dotted `key` (`a.b.c`) of a nested dict to an already typed value."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {part} is not a section")
    node[leaf] = value


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' (the hint every unknown-name error gives)."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, source)) from None


def _describe(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    """One line for the first error: file, dotted key, what is wrong and what is allowed."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    key = ".".join(loc) or "(root)"
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = ExperimentConfig
        for part in loc[:-1]:
            annotation = model.model_fields[part].annotation
            model = next(a for a in (annotation, *getattr(annotation, "__args__", ())) if
                         isinstance(a, type) and issubclass(a, BaseModel))
        allowed = sorted(model.model_fields)
        hint = did_you_mean(loc[-1], allowed)
        return f"{source}: {key}: unknown key{hint} (allowed: {', '.join(allowed)})"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and not loc:  # a whole-file check: its message names the keys
        return f"{source}: {message}"
    return f"{source}: {key}: {message} (got {err.get('input')!r})"


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    """Write the fully resolved config as TOML (None values are left out: they mean 'default')."""
    path.write_text(tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))


def options_for(fn: Callable[..., Any], section: BaseModel, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments for `fn` taken from the config section fields it accepts (None = unset)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names = set(type(section).model_fields)
    else:
        names = set(params)
    out = {k: v for k, v in section.model_dump().items() if k in names and v is not None}
    out.update(fixed)
    return out
