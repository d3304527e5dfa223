"""The experiment schema: one TOML file, validated, with `--set section.key=value` overrides.

Every section forbids unknown keys, so a misspelt key fails with one line that names the
key, the file and what is allowed instead of being silently ignored. `data.kind` picks one
class per kind declaring only its options; a model family takes only its own options; every
problem of a file is reported at once, one line each. Validation never looks at the machine:
a config valid here is valid anywhere (`nnlab.training.resources` checks this machine when
training starts).
"""

from __future__ import annotations

import copy
import inspect
import re
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from nnlab.errors import ConfigError
from nnlab.fileio import atomic_write_text
from nnlab.schema_errors import did_you_mean, error_lines

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


class DataSection(Section):
    """What every data kind shares: the model input's size and normalisation, the split fractions,
    batching and loader workers. Each kind below adds only its own options (`data.kind` picks one)."""

    #: what the kind yields ("images" or "drawings"), for registries that dispatch on it
    modality: ClassVar[str] = "images"

    kind: str = Field(description="data set kind: digits, idx, npz, folder, bitmap, csv, strokes, synth")
    image_size: int = Field(28, ge=4, le=1024, description="side of the square model input in pixels")
    channels: Literal[1, 3] = 1
    mean: float = Field(0.5, allow_inf_nan=False)
    std: float = Field(0.5, gt=0, allow_inf_nan=False)
    augment: bool = Field(False, description="augment the training split (never val or test)")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1, description="ignored where the source has an official test part")
    batch_size: int = Field(128, ge=1, le=65536)
    eval_batch_size: int | None = Field(None, ge=1, le=65536)
    num_workers: int = Field(0, ge=0, le=64)
    persistent_workers: bool = Field(True, description="keep the loader's worker processes between epochs "
                                     "(num_workers > 0)")
    prefetch_factor: int | None = Field(None, ge=1, le=64, description="batches each worker keeps ready "
                                        "(num_workers > 0; default torch's 2)")
    mixup: float = Field(0.0, ge=0, le=100, description="MixUp's Beta alpha for training batches (0: off)")
    cutmix: float = Field(0.0, ge=0, le=100, description="CutMix's Beta alpha (0: off; with mixup, half each)")
    mix_prob: float = Field(1.0, ge=0, le=1, description="share of training batches mixed (mixup / cutmix)")
    mix_off_epochs: int = Field(0, ge=0, description="train the last N epochs unmixed (mixup / cutmix)")

    @property
    def input_modality(self) -> str:
        """What the model receives: "images", "drawings" (rendered) or "sequences" (point sequences)."""
        return self.modality


class ImageData(DataSection):
    """Image kinds: split by class, or by identity for open-set evaluation."""

    split: Literal["stratified", "identity"] = Field("stratified", description="by class, or by identity "
                                                     "(open set: unseen people at test time)")
    open_set_identities: int | None = Field(None, ge=1, description="identity split: how many identities are held "
                                            "out unseen (default: test_fraction of them)")


class DigitsData(ImageData):
    """scikit-learn's bundled 8x8 digits (no options of its own)."""

    kind: Literal["digits"] = "digits"


class IdxData(ImageData):
    """MNIST / Fashion-MNIST IDX files in a folder, optionally downloaded."""

    kind: Literal["idx"] = "idx"
    path: str | None = Field(None, description="the folder of the IDX files")
    download: bool = Field(False, description="fetch the official files when missing")
    dataset: Literal["mnist", "fashion-mnist"] | None = Field(None, description="which official data set to "
                                                               "download (default mnist)")


class NpzData(ImageData):
    """Two arrays of an .npz file."""

    kind: Literal["npz"] = "npz"
    path: str | None = Field(None, description="the .npz file")
    images_key: str = "images"
    labels_key: str = "labels"


class FolderData(ImageData):
    """One sub-folder of image files per class."""

    kind: Literal["folder"] = "folder"
    path: str | None = Field(None, description="the folder of class folders")
    on_bad: Literal["skip", "error"] = Field("error", description="an unreadable image: stop, or leave it out")


class BitmapData(ImageData):
    """Google's Quick, Draw! full_numpy_bitmap_<word>.npy files."""

    kind: Literal["bitmap"] = "bitmap"
    path: str | None = Field(None, description="the folder of .npy files")
    max_per_class: int | None = Field(None, ge=1)


class CsvData(ImageData):
    """Rows of pixel values then the class (UCI optdigits style)."""

    kind: Literal["csv"] = "csv"
    path: str | None = Field(None, description="the CSV file")
    test_path: str | None = Field(None, description="a separate test file")
    shape: list[int] | None = Field(None, description="image shape of the flat feature rows")
    header: bool | Literal["auto"] = "auto"
    scale: float | None = Field(None, gt=0, description="largest feature value, mapped to 255")


class DrawingData(DataSection):
    """Quick, Draw! drawings, rendered into images or fed as point sequences (always split by key_id hash)."""

    modality: ClassVar[str] = "drawings"

    input: Literal["image", "sequence"] = Field("image", description="rendered images, or point sequences for "
                                                "stroke_rnn / stroke_gru")
    max_points: int = Field(256, ge=2, le=100_000, description="sequence input: longer drawings are resampled")
    encoding: Literal["binary", "time-decay", "order-velocity-time", "order-stroke-time"] = "time-decay"
    line_width: float | None = Field(None, gt=0, description="stroke width in output pixels")
    padding: float = Field(0.0, ge=0, lt=0.5, description="margin as a fraction of the image side")
    flip: float = Field(0.0, ge=0, le=1, description="with augment: probability of mirroring a training drawing "
                        "left-right (most doodles mean the same mirrored; pairs with `predict --tta flip`)")

    @property
    def input_modality(self) -> str:
        return "sequences" if self.input == "sequence" else "drawings"


class StrokesData(DrawingData):
    """A packed stroke store made by `nnlab data prepare`."""

    kind: Literal["strokes"] = "strokes"
    path: str | None = Field(None, description="the stroke store folder")
    recognized_only: bool = Field(False, description="keep only the drawings the game recognised")


class SynthData(DrawingData):
    """Synthetic doodles drawn on the fly."""

    kind: Literal["synth"] = "synth"
    classes: int | list[str] | None = Field(None, description="synthetic doodle classes: a count or names "
                                            "(default 12)")
    per_class: int = Field(300, ge=1, description="synthetic drawings per class")

    @field_validator("classes")
    @classmethod
    def _some_classes(cls, value: int | list[str] | None) -> int | list[str] | None:
        if isinstance(value, int) and value < 1 or isinstance(value, list) and not value:
            raise ValueError("at least 1 class")
        return value


#: every data kind by its `kind` tag (the classes declare their own options and `modality`)
DATA_KINDS: dict[str, type[DataSection]] = {
    cls.model_fields["kind"].default: cls
    for cls in (DigitsData, IdxData, NpzData, FolderData, BitmapData, CsvData, StrokesData, SynthData)}

#: the `[data]` section: one class per kind, picked by `kind`
DataConfig = Annotated[DigitsData | IdxData | NpzData | FolderData | BitmapData | CsvData | StrokesData | SynthData,
                       Field(discriminator="kind")]


def _owners(classes: dict[str, set[str]]) -> dict[str, list[str]]:
    """option -> the names whose option set holds it."""
    owners: dict[str, list[str]] = {}
    for name, options in classes.items():
        for option in options:
            owners.setdefault(option, []).append(name)
    return owners


_DATA_OPTION_KINDS = _owners({kind: set(cls.model_fields) for kind, cls in DATA_KINDS.items()})


def register_data_section(section: type[DataSection]) -> None:
    """Add a data kind's section class (its `kind` field a Literal tag) to the schema: the `[data]` union,
    the known kinds and the owners of each option (`datasets.kinds.register_kind` calls it)."""
    DATA_KINDS[section.model_fields["kind"].default] = section
    _rebuild_data_schema()


def unregister_data_section(kind: str) -> None:
    """Remove a kind that `register_data_section` added (tests)."""
    if DATA_KINDS.pop(kind, None) is not None:
        _rebuild_data_schema()


def _rebuild_data_schema() -> None:
    """The option owners and the `[data]` union of ExperimentConfig, from DATA_KINDS as it is now."""
    _DATA_OPTION_KINDS.clear()
    _DATA_OPTION_KINDS.update(_owners({kind: set(cls.model_fields) for kind, cls in DATA_KINDS.items()}))
    ExperimentConfig.model_fields["data"].annotation = Annotated[Union[tuple(DATA_KINDS.values())],  # noqa: UP007
                                                                 Field(discriminator="kind")]
    ExperimentConfig.model_rebuild(force=True)


class ModelConfig(Section):
    """A registered builder (`nnlab models`) or any timm model as `timm:<name>`.

    Options of one model family (`MODEL_FAMILIES`) are refused for a model of another; the
    embedding/head options and `weights`, `dropout` apply to every model. A name outside the
    families (a builder registered by the user) takes any option its builder declares."""

    name: str = "lenet"
    pretrained: bool = Field(False, description="start from ImageNet weights: offline for timm:tf_efficientnet_lite0/1/2 "
                             "(nnlab[pretrained]), else downloaded by timm")
    weights: str | None = Field(None, description="a local state dict (.pt) or .safetensors file to start from")
    dropout: float = Field(0.0, ge=0, lt=1)
    # mlp
    hidden: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(default_factory=lambda: [512, 128, 64],
                                                                    description="mlp hidden sizes")
    activation: Literal["relu", "sigmoid", "tanh", "gelu"] = "relu"
    batchnorm: bool = True
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

    @model_serializer(mode="wrap")
    def _family_options_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a dump (config.toml, study cells) holds what this model takes, so it validates back strictly
        allowed = model_options(self.name)
        return {k: v for k, v in handler(self).items() if allowed is None or k in allowed}


#: options of every model; each family adds its own (`model_family` maps a name to its family)
COMMON_MODEL_OPTIONS = ("name", "weights", "dropout", "head", "embedding_dim", "embedding_bn", "margin", "scale",
                        "easy_margin", "triplet_weight", "triplet_margin")
MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "timm:*": ("pretrained",),
    "lenet*": (),
    "mlp": ("hidden", "activation", "batchnorm"),
    "stroke_rnn/stroke_gru": ("conv_filters", "conv_kernels", "rnn_hidden", "rnn_layers"),
}
_MODEL_OPTION_FAMILIES = _owners({family: set(options) for family, options in MODEL_FAMILIES.items()})


def model_family(name: str) -> str | None:
    """The family of model `name` (a key of MODEL_FAMILIES), or None for a name outside them."""
    if name.startswith("timm:"):
        return "timm:*"
    if name.startswith("lenet"):
        return "lenet*"
    if name in ("mlp", "mlp_numpy"):
        return "mlp"
    if name in ("stroke_rnn", "stroke_gru"):
        return "stroke_rnn/stroke_gru"
    return None


def model_options(name: str) -> set[str] | None:
    """The model-section options model `name` takes (None: any, for a name outside the families)."""
    family = model_family(name)
    return None if family is None else {*COMMON_MODEL_OPTIONS, *MODEL_FAMILIES[family]}


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


class DistillConfig(Section):
    """Knowledge distillation (`nnlab distill`): loss = (1 - alpha) CE(labels) + alpha T^2 KL(teachers || student)
    at temperature T, the teachers' probabilities averaged."""

    teachers: list[str] = Field(min_length=1, description="run directories of the teachers (same model input)")
    temperature: float = Field(4.0, gt=0, le=100, description="T: both sides' logits are divided by it")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teachers' term")


class TrainConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)  # epochs = "15" is an error

    epochs: int = Field(10, ge=1, le=100000)
    steps_per_epoch: int | None = Field(None, ge=1, le=10**8, description="fixed batches per epoch (endless samplers)")
    grad_accum: int = Field(1, ge=1, le=1024)
    clip_grad_norm: float | None = Field(None, gt=0)
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="mixed precision on CUDA; CPU is fp32")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1,
                                description="CPU threads: torch's, or BLAS's for the NumPy engine (default: chosen so "
                                "that torch threads + data.num_workers fit the usable cores; see device.choose_threads)")
    freeze_first: int = Field(0, ge=0, description="freeze the first N parameterised layers")
    train_last: int | None = Field(None, ge=1, description="train only the last K parameterised layers")
    unfreeze_epoch: int | None = Field(None, ge=1, description="train every layer after this many epochs with "
                                       "freeze_first / train_last frozen (fine-tuning a pretrained start)")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise lr decay: each layer's rate is "
                                      "decay ** (layers above it) times the schedule's (timm's grouping)")
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
    distill: DistillConfig | None = Field(None, description="learn from trained teachers too (nnlab distill)")
    tracking: Literal["none", "mlflow"] = Field("none", description="'mlflow': config, history by epoch, results, "
                                                "plots and ONNX files to MLflow (pip install 'nnlab[mlflow]')")
    tracking_uri: str | None = Field(None, description="MLflow URI (default sqlite:///<cwd>/runs/mlflow.db)")
    experiment: str | None = Field(None, description="MLflow experiment (default: name; a study's cells: the study's)")


class EvalConfig(Section):
    main_metric: str = Field("accuracy", description="metric on the val split that picks the best checkpoint")
    top_k: int = Field(3, ge=1)
    gallery_per_id: int = Field(1, ge=1, description="open set: the first N images of each unseen identity "
                                "form the gallery, the rest are probes")


StudyExecutor = Literal["pool", "local", "slurm", "debug"]
EXECUTORS: tuple[str, ...] = typing.get_args(StudyExecutor)


class SlurmConfig(Section):
    """`[study.slurm]`: each cell's job with `study.executor = "slurm"` (the sbatch options it sets)."""

    partition: str | None = Field(None, description="sbatch --partition (default: the cluster's)")
    time: int = Field(60, ge=1, description="minutes a cell's job may run (--time)")
    gpus_per_cell: int = Field(0, ge=0, description="GPUs of a cell's job (--gpus-per-node)")
    cpus_per_cell: int = Field(4, ge=1, description="CPU cores of a cell's job (--cpus-per-task), its torch threads")
    mem_gb: int | None = Field(None, ge=1, description="memory of a cell's job in GB (--mem)")
    array_parallelism: int = Field(16, ge=1, description="cells of the job array running at once (--array=0-N%K)")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    setup: list[str] = Field(default_factory=list, description="shell lines run before the cell (source a venv)")


class StudyConfig(Section):
    """A grid of variants x seeds run by `nnlab study` (see study.py)."""

    grid: dict[str, dict[str, Any]] = Field(default_factory=dict, description="variant name -> overrides")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    workers: int | None = Field(None, ge=1, description="parallel cells (default: by cores)")
    executor: StudyExecutor = Field("pool", description="where cells run: a process pool, or submitit's local, "
                                    "slurm (a job array) or debug executor")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig, description="each cell's Slurm job (executor = slurm)")
    metric: str = Field("accuracy", description="test metric compared across variants")
    threshold: float = Field(0.01, ge=0, description="a difference smaller than this is 'within' (1 pp)")
    significance: float = Field(0.05, gt=0, lt=1, description="p-value below which a difference is significant")


class ExperimentConfig(Section):
    """One experiment: the root of the TOML file. Validation checks the file against itself only,
    never against this machine (`nnlab.training.resources` checks memory when training starts)."""

    name: str = Field("experiment", min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    seed: int = Field(0, ge=0)
    engine: Literal["torch", "numpy"] = "torch"
    data: DataConfig = Field(default_factory=DigitsData)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    study: StudyConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        problems = cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def cross_field_problems(cfg: ExperimentConfig) -> list[str]:
    """The rules between keys, one line each naming its keys (what would otherwise fail after an
    epoch or deep in NumPy/torch)."""
    problems = []
    d = cfg.data
    if d.val_fraction + d.test_fraction >= 1:
        problems.append(f"data.val_fraction + data.test_fraction must be < 1, got {d.val_fraction} + "
                        f"{d.test_fraction}; lower one of them")
    try:
        higher_is_better(cfg.eval.main_metric)
        base = re.sub(r"^(val|train|test)_", "", cfg.eval.main_metric)
        m = re.fullmatch(r"map(\d+)|top(\d+)_accuracy", base)
        if m and int(m.group(1) or m.group(2)) != cfg.eval.top_k:
            problems.append(f"eval.main_metric = {cfg.eval.main_metric!r} is computed with eval.top_k = "
                            f"{int(m.group(1) or m.group(2))}, but eval.top_k = {cfg.eval.top_k}; set one to match")
    except ConfigError as exc:
        problems.append(f"eval.main_metric: {exc}")
    if cfg.engine == "numpy" and (cfg.train.channels_last or cfg.train.compile):
        problems.append("train.channels_last and train.compile apply to the torch engine only; "
                        "remove them or set engine = 'torch'")
    t = cfg.train
    if cfg.engine == "numpy" and (t.layer_decay is not None or t.unfreeze_epoch is not None):
        problems.append("train.layer_decay and train.unfreeze_epoch apply to the torch engine only")
    mixing = d.mixup > 0 or d.cutmix > 0
    if (mixing or t.distill) and (cfg.engine != "torch" or cfg.model.head != "linear" or cfg.model.triplet_weight):
        problems.append("data.mixup / data.cutmix and train.distill need engine = 'torch' and a classifier head "
                        "(model.head = 'linear', no triplet term)")
    if mixing and d.input_modality == "sequences":
        problems.append("data.mixup / data.cutmix mix images: not with data.input = 'sequence'")
    if mixing and d.mix_off_epochs >= t.epochs:
        problems.append(f"data.mix_off_epochs = {d.mix_off_epochs} must be < train.epochs = {t.epochs}")
    if t.unfreeze_epoch is not None and not (t.freeze_first or t.train_last):
        problems.append("train.unfreeze_epoch needs frozen layers: set train.freeze_first or train.train_last")
    if getattr(d, "split", None) == "identity" and (cfg.engine != "torch" or not cfg.model.embedding_model):
        problems.append("data.split = 'identity' (open-set evaluation) needs an embedding model: engine = "
                        "'torch' and model.embedding_dim set, or model.head = 'arcface' or 'cosface'")
    return problems


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None, lenient: bool = False) -> ExperimentConfig:
    """Read a TOML experiment (or start from `base`), apply `section.key=value` overrides, validate
    (`lenient`: a saved run's config.toml, see `validate`)."""
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
    return validate(raw, source, lenient)


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


def flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys (`{model = {name = "x"}}` and `{"model.name" = "x"}` agree)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, dotted + ".")
        else:
            flat[dotted] = value
    return flat


def set_key(raw: dict[str, Any], key: str, value: Any, where: str = "config") -> None:
    """Set the dotted `key` (`a.b.c`) of a nested dict to an already typed value.

    Setting `data.kind` or `model.name` to another kind or family drops the section's options the
    new one does not take (the ones of the old kind), so `--set data.kind=npz` or a study variant
    `model.name = "lenet"` switch cleanly; options set after the switch are checked strictly."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {part} is not a section")
    switched = key in _SWITCHES and node.get(leaf, _SWITCHES[key][0]) != value
    node[leaf] = value
    if switched:
        _SWITCHES[key][1](raw)


def validate(raw: dict[str, Any], source: str = "config", lenient: bool = False) -> ExperimentConfig:
    """Validate a config dict; every problem is reported at once, one line each (`source: key: what`).

    `lenient` (for the config.toml of a saved run, written when every kind had every option) drops
    the options of another data kind or model family instead of refusing them."""
    raw = copy.deepcopy(raw)
    problems = unknown_kind(raw)
    if problems:
        del raw["data"]  # its options cannot be checked without a kind
    foreign = own_options(raw)
    problems += [] if lenient else foreign
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        problems += error_lines(exc, ExperimentConfig)
    if problems:
        raise ConfigError("\n".join(f"{source}: {line}" for line in problems))
    return cfg


def unknown_kind(raw: dict[str, Any]) -> list[str]:
    """The line refusing `data.kind` when it names no kind (none when it does or is left out)."""
    data = raw.get("data")
    kind = data.get("kind", "digits") if isinstance(data, dict) else "digits"
    if isinstance(kind, str) and kind in DATA_KINDS:
        return []
    return [f"data.kind: unknown kind {kind!r}{did_you_mean(str(kind), DATA_KINDS)} (known: {', '.join(DATA_KINDS)})"]


def own_options(raw: dict[str, Any]) -> list[str]:
    """Take the options of another data kind or model family out of `raw` (in place), and return
    the lines refusing them, each naming the kinds or families the option belongs to."""
    return _foreign_data_options(raw) + _foreign_model_options(raw)


def _foreign_data_options(raw: dict[str, Any]) -> list[str]:
    data = raw.get("data")
    if not isinstance(data, dict) or unknown_kind(raw):
        return []
    kind = data.setdefault("kind", "digits")
    own = DATA_KINDS[kind].model_fields
    foreign = [k for k in data if k not in own and k in _DATA_OPTION_KINDS]
    for key in foreign:
        del data[key]
    return [f"data.{key}: not an option of kind {kind!r} (it belongs to kinds: {', '.join(_DATA_OPTION_KINDS[key])})"
            for key in foreign]


def _foreign_model_options(raw: dict[str, Any]) -> list[str]:
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name", "lenet"), str):
        return []
    name = model.get("name", "lenet")
    allowed = model_options(name) or set(ModelConfig.model_fields)
    foreign = [k for k in model if k not in allowed and k in _MODEL_OPTION_FAMILIES]
    for key in foreign:
        del model[key]
    return [f"model.{key}: not an option of model {name!r} (it belongs to {', '.join(_MODEL_OPTION_FAMILIES[key])}; "
            f"{model_family(name)} takes: {', '.join(sorted(allowed))})" for key in foreign]


#: the keys that pick a section's class of options: their default, and what drops the options of another
_SWITCHES: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "data.kind": ("digits", _foreign_data_options),
    "model.name": ("lenet", _foreign_model_options),
}


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    """Write the fully resolved config as TOML (None values are left out: they mean 'default'), atomically:
    `resume --epochs` rewrites a run's config.toml, which a kill or a full disk must not cut short."""
    atomic_write_text(path, tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))


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
