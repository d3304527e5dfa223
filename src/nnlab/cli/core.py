"""Core commands: run, distill, resume, eval, predict, report, compare, summary, models.

Each command imports the library it calls when it runs: torch and timm take seconds to load, and
`nnlab data ...` must work without them. A command that takes a config validates it (and `--set`) first,
so that a typo answers in a second rather than after torch has loaded."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app, state
from nnlab.config import load_config
from nnlab.errors import ModelError

SET_HELP = "Override a config value: section.key=value (repeatable)."


def _echo(text: str) -> None:
    typer.echo(text)


def _announce_run(path) -> None:
    state["run_dir"] = str(path)  # for main()'s "interrupted; resume with ..." line
    _echo(f"run directory: {path}")


@app.command()
def run(config: Path = typer.Argument(..., help="Experiment TOML file."),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<name>-<timestamp>).")) -> None:
    """Train an experiment; prints the run directory when it starts and when it ends, and one line per epoch.

    Example: nnlab run recipes/digits-lenet.toml --set train.epochs=3
    """
    load_config(config, set_)  # fit validates it again; this answers a typo before torch loads
    from nnlab.api import fit  # heavy (torch): imported when the command runs
    from nnlab.device import is_main_process  # heavy (torch): imported when the command runs
    from nnlab.runs.report import format_report  # numpy: loaded by the commands that read runs

    run_ = fit(config, set_, out=out, announce=_announce_run)
    if is_main_process():
        _echo(format_report(run_.dir))
        _echo(f"finished: {run_.path}")


@app.command()
def distill(teachers: list[Path] = typer.Argument(..., help="Run directories of the teachers."),
            config: Path = typer.Option(..., "--config", help="The student's experiment TOML file."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP),
            out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<name>-<timestamp>)."),
            temperature: float | None = typer.Option(None, "--temperature", help="T (default train.distill's, or 4)."),
            alpha: float | None = typer.Option(None, "--alpha", help="Weight of the teachers' term (default 0.5).")) -> None:
    """Train a student from its labels and its teachers' softened probabilities (an ordinary run directory).

    Example: nnlab distill runs/big-a runs/big-b --config recipes/quickdraw.toml --out runs/student
    """
    load_config(config, set_)  # distill validates it again; this answers a typo before torch loads
    from nnlab.api import distill as distill_run  # heavy (torch): imported when the command runs
    from nnlab.device import is_main_process  # heavy (torch): imported when the command runs
    from nnlab.runs.report import format_report  # numpy: loaded by the commands that read runs

    run_ = distill_run(teachers, config, set_, out=out, temperature=temperature, alpha=alpha, announce=_announce_run)
    if is_main_process():
        _echo(format_report(run_.dir))
        _echo(f"finished: {run_.path}")


@app.command()
def resume(run_dir: Path = typer.Argument(..., help="Run directory to continue."),
           epochs: int | None = typer.Option(None, "--epochs", min=1,
                                             help="Extend the run to this many epochs in all (the schedule is "
                                                  "re-planned and config.toml updated).")) -> None:
    """Continue a run exactly where its last checkpoint left it, or extend a finished one.

    Example: nnlab resume runs/digits-lenet-20260101-120000 --epochs 30
    """
    from nnlab.runs.report import format_report  # numpy: loaded by the commands that read runs
    from nnlab.runs.run import Run  # numpy: loaded by the commands that read runs

    Run.open(run_dir)  # resume opens it again; this answers a wrong folder before torch loads
    from nnlab.api import resume as resume_run  # heavy (torch): imported when the command runs

    state["run_dir"] = str(run_dir)  # for main()'s "interrupted; resume with ..." line
    _echo(f"resuming {run_dir}")
    _echo(format_report(resume_run(run_dir, epochs=epochs).dir))


@app.command("eval")
def eval_(run_dir: Path = typer.Argument(..., help="Run directory."),
          data: Path | None = typer.Option(None, "--data", help="Evaluate on another data path (same kind)."),
          split: str | None = typer.Option(None, "--split", help="train, val or test (default: test where the "
                                                                 "run has a test split, else val)."),
          set_: list[str] = typer.Option([], "--set", help="Override data settings, e.g. data.kind=npz.")) -> None:
    """Evaluate a run's best checkpoint on a split, printing its metrics.

    Example: nnlab eval runs/digits-lenet-<stamp> --split val
    """
    from nnlab.evaluation.evaluate import evaluate_run  # heavy (torch): imported when the command runs

    metrics = evaluate_run(run_dir, split=split, data_path=data, overrides=set_)
    if split is None and metrics["split"] != "test":
        typer.echo(f"note: the run has no test split; evaluating {metrics['split']}", err=True)
    for k, v in metrics.items():
        _echo(f"{k:<16} {v:.4f}" if isinstance(v, float) else f"{k:<16} {v}")


@app.command()
def predict(inputs: list[Path] = typer.Argument(..., help="RUN [RUN ...] INPUT: run directories, then the input."),
            out: Path = typer.Option(..., "--out", help="Output CSV."),
            top_k: int = typer.Option(3, "--top-k", min=1, help="Classes listed per input, most probable first "
                                                                "(a Kaggle submission: labels per row)."),
            tta: str | None = typer.Option(None, "--tta", help="Test-time augmentation: flip."),
            weights: str | None = typer.Option(None, "--weights", help="Ensemble weights w1,w2,... (one per run)."),
            balance: bool = typer.Option(False, "--balance", help="Drawings: cap each class's first choices at its "
                                         "share of the rows (only for a test set known to be balanced, as "
                                         "Kaggle's is)."),
            strict: bool = typer.Option(False, "--strict", help="Drawings: exit 2 on a bad row or a truncated or "
                                                                 "corrupt file instead of warning."),
            on_bad: str = typer.Option("skip", "--on-bad", help="An image file that cannot be read: skip (its row "
                                                                "says unreadable, with a warning) or error.")) -> None:
    """Predict an input with one run or an ensemble of runs (images -> probability CSV;
    drawings -> Kaggle submission).

    Example: nnlab predict runs/digits-lenet-<stamp> my_digits/ --out predictions.csv
    """
    from nnlab.inference.predict import predict_command  # heavy (torch): imported when the command runs

    if len(inputs) < 2:
        raise typer.BadParameter("give at least one run directory and an input")
    if on_bad not in ("skip", "error"):
        raise typer.BadParameter(f"--on-bad {on_bad!r}: choose skip or error")
    n, message = predict_command(inputs[:-1], inputs[-1], out, top_k=top_k, tta=tta, weights=weights,
                                 balance=balance, strict=strict, on_bad=on_bad)
    if message:
        typer.echo(message, err=True)
    _echo(f"wrote {n} rows to {out}")


@app.command()
def average(run_dir: Path = typer.Argument(..., help="Run directory whose checkpoints are averaged."),
            out: Path = typer.Option(..., "--out", help="The new run directory."),
            best: int | None = typer.Option(None, "--best", min=1, help="Average the best K checkpoints "
                                            "(train.keep_best >= K)."),
            last: int | None = typer.Option(None, "--last", min=1, help="Average the last N epochs' weights "
                                            "(train.keep_last >= N).")) -> None:
    """Average a run's checkpoints into a new run (BatchNorm statistics recomputed), evaluated like any run.
    Example: nnlab average runs/quickdraw-1 --last 5 --out runs/quickdraw-1-avg"""
    from nnlab.runs.report import format_report  # numpy: loaded by the commands that read runs
    from nnlab.training.average import average_run  # heavy (torch): imported when the command runs

    run_ = average_run(run_dir, out, best=best, last=last)
    _echo(format_report(run_))
    _echo(f"finished: {run_.path}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Print a finished run's summary.

    Example: nnlab report runs/digits-lenet-<stamp>
    """
    from nnlab.runs.report import format_report  # numpy: loaded by the commands that read runs
    from nnlab.runs.run import Run  # numpy: loaded by the commands that read runs

    _echo(format_report(Run.open(run_dir)))


@app.command()
def compare(run_dirs: list[Path] = typer.Argument(..., help="Run directories."),
            out: Path | None = typer.Option(None, "--out", help="Also write the Markdown table here."),
            metric: str | None = typer.Option(None, "--metric", help="Sort by this metric.")) -> None:
    """A Markdown table of runs (val and test metrics, parameters, time, images/s), best first.

    Example: nnlab compare runs/* --out compare.md
    """
    from nnlab.runs.report import compare_table  # numpy: loaded by the commands that read runs
    from nnlab.runs.run import Run  # numpy: loaded by the commands that read runs

    table = compare_table([Run.open(p) for p in run_dirs], metric)
    if out:
        out.write_text(table)
    _echo(table)


@app.command()
def summary(config: Path = typer.Argument(..., help="Experiment TOML file."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP)) -> None:
    """Per-layer table of the configured model (name, output shape, parameters), like Keras' summary().

    Example: nnlab summary recipes/digits-lenet.toml
    """
    cfg = load_config(config, set_)  # before torch loads: a typo answers at once
    from nnlab.datasets.kinds import example_input_shape, input_channels  # heavy (torch)
    from nnlab.models import (  # heavy (torch): imported when the command runs
        build_model,
        count_parameters,
        summary_rows,
    )

    num_classes = _class_count(cfg)
    model = build_model(cfg.model, input_channels(cfg.data), num_classes, cfg.data.image_size)
    input_shape = example_input_shape(cfg.data)
    rows = summary_rows(model, input_shape)
    width = max([len(r[0]) + len(r[1]) + 3 for r in rows] + [20])
    _echo(f"{'layer (type)':<{width}} {'output shape':<22} {'params':>10}")
    _echo("-" * (width + 34))
    for name, kind, shape, params in rows:
        _echo(f"{f'{name} ({kind})':<{width}} {shape:<22} {params:>10,}")
    _echo("-" * (width + 34))
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    _echo(f"total parameters: {total:,} (trainable {trainable:,}); input {'x'.join(map(str, input_shape[1:]))}, "
          f"{num_classes} classes")


def _class_count(cfg) -> int:
    """Classes of the configured data, without loading images where it can be avoided."""
    if cfg.data.kind in ("digits", "idx", "csv"):
        return 10
    from nnlab.datasets import build_data  # heavy (torch): imported when the command runs

    return len(build_data(cfg).classes)


@app.command()
def models(pattern: str = typer.Argument("", help="Part of the name (resnet, lenet) or a glob "
                                                "(lenet_*, timm:mobilenet*)."),
           timm_models: bool = typer.Option(True, "--timm/--no-timm", help="Include timm's models.")) -> None:
    """List registered models with a one-line description, and timm's models.

    Example: nnlab models lenet --no-timm
    """
    from nnlab.models import describe_models  # heavy (torch): imported when the command runs

    rows = describe_models(pattern, include_timm=timm_models)
    if not rows:
        raise ModelError(f"no model matches {pattern!r}; `nnlab models` lists them all")
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        _echo(f"{name:<{width}}  {description}".rstrip())
