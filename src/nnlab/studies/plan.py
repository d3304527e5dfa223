"""Planning a study: the grid of variants x seeds, one run directory per cell, and each cell's state."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlab.config import (
    EXECUTORS,
    ExperimentConfig,
    StudyConfig,
    apply_override,
    flatten,
    higher_is_better,
    load_config,
    set_key,
    validate,
)
from nnlab.errors import ConfigError
from nnlab.runs.run import resolve_paths

REPORT_MD, REPORT_JSON, ERROR_FILE = "report.md", "report.json", "error.txt"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]+$")
# A comma starts a new override only when `key=` follows, so list values like [512,128] survive.
_OVERRIDE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w-]*(?:\.[\w-]+)*\s*=)")

# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, eq=False)  # hashed by identity: the config is not hashable
class Cell:
    """One (variant, seed) pair: its resolved experiment and its run directory."""

    variant: str
    seed: int
    path: Path
    config: ExperimentConfig

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"


@dataclass
class Study:
    """A planned study: the settings, the variants' overrides and every cell."""

    name: str
    out: Path
    settings: StudyConfig
    variants: dict[str, dict[str, Any]]
    cells: list[Cell]
    source: str = "config"


def parse_grid_option(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME=key=value[,key=value...]` (the `--grid` option) -> (name, {dotted key: value})."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not NAME_PATTERN.match(name):
        raise ConfigError(f"--grid {text!r}: expected NAME=key=value[,key=value...] with a NAME of "
                          "letters, digits, '_', '-', '.', '+'")
    raw: dict[str, Any] = {}
    for item in filter(str.strip, _OVERRIDE_SPLIT.split(rest)):
        try:
            apply_override(raw, item.strip())
        except ConfigError as exc:
            raise ConfigError(f"--grid {text!r}: {exc}") from None
    return name, flatten(raw)


def plan_study(config: str | Path | ExperimentConfig, overrides: Sequence[str] = (), grid: Sequence[str] = (),
               seeds: int | None = None, out: str | Path | None = None, workers: int | None = None,
               source: str | None = None, executor: str | None = None) -> Study:
    """Expand a study into its cells without running anything.

    `config` is a TOML file (its `[study]` section gives the grid and seeds) or a config;
    `overrides` (`--set`) apply to every cell; `grid` (`--grid NAME=OVERRIDES`) replaces the
    file's grid; `seeds` = K means seeds 0..K-1. A variant's overrides win over `--set`.
    The default directory `studies/<name>/` is deterministic, so running again resumes. `source` names
    the config in messages (default: its path, or "config"). `executor` (`--executor`) replaces
    study.executor: pool, local, slurm or debug.
    """
    if isinstance(config, ExperimentConfig):
        base = load_config(None, overrides, base=config.model_dump(mode="json", exclude_none=True))
        source = source or "config"
    else:
        base, source = load_config(config, overrides), source or str(config)
    settings = (base.study or StudyConfig()).model_copy(deep=True)
    if grid:
        variants = dict(parse_grid_option(g) for g in grid)
        if len(variants) != len(grid):
            raise ConfigError("--grid: each variant NAME must be given once")
    else:
        variants = {name: flatten(o) for name, o in settings.grid.items()}
    if not variants:
        variants = {"base": {}}
    for name in variants:
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"{source}: study.grid: variant name {name!r} may only hold letters, digits, "
                              "'_', '-', '.', '+' (it names a folder)")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds}: give at least one seed")
        settings.seeds = list(range(seeds))
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise ConfigError(f"{source}: study.seeds must be distinct and not empty (got {settings.seeds})")
    if workers is not None:
        settings.workers = workers
    if executor is not None:
        if executor not in EXECUTORS:
            raise ConfigError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
        settings.executor = executor
    try:
        higher_is_better(settings.metric)
    except ConfigError as exc:
        raise ConfigError(f"{source}: study.metric: {exc}") from None
    out_dir = Path(out) if out is not None else Path("studies") / base.name
    template = base.model_dump(mode="json", exclude_none=True)
    template.pop("study", None)
    cells = []
    for seed, variant in itertools.product(settings.seeds, variants):  # seed-major: a cut-short study
        raw = json.loads(json.dumps(template))                          # still covers every variant
        where = f"{source}: study.grid.{variant}"
        for key, value in variants[variant].items():
            set_key(raw, key, value, f"{where}: {key}")
        raw["seed"], raw["name"] = seed, f"{base.name}-{variant}-seed{seed}"
        cfg = resolve_paths(validate(raw, where))
        cells.append(Cell(variant, seed, (out_dir / variant / f"seed{seed}").resolve(), cfg))
    return Study(base.name, out_dir.resolve(), settings, variants, cells, source)


# --------------------------------------------------------------------------- state of a cell


def cell_state(cell: Cell) -> str:
    """'done' (metrics.json), 'resume' (a checkpoint to go on from) or 'new' (start from scratch).

    A finished cell trained with a different config is an error: mixing it into the report
    would compare unlike things. An unfinished one is simply started again.
    """
    saved_file = cell.path / "config.toml"
    if not saved_file.is_file():
        return "new"
    try:
        # leniently, as a saved run: the cell may have been written by an older nnlab
        saved = load_config(saved_file, lenient=True).model_dump(mode="json")
    except ConfigError:
        saved = {}
    expected = cell.config.model_dump(mode="json")
    finished = (cell.path / "metrics.json").is_file()
    if saved != expected:
        if finished:
            saved, expected = flatten(saved), flatten(expected)
            changed = sorted(k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k))
            raise ConfigError(f"{cell.path} was trained with a different config (differs in: "
                              f"{', '.join(changed[:6]) or 'schema'}); choose another --out or delete that folder")
        return "new"
    if finished:
        return "done"
    return "resume" if resumable(cell.path) else "new"


def resumable(path: Path) -> bool:
    """Whether a cell's folder holds a checkpoint to go on from (checkpoints/last.*)."""
    return any((Path(path) / "checkpoints").glob("last.*"))


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # done (already finished), trained, resumed, failed
    seconds: float = 0.0
    error: str | None = None
