"""`nnlab lr-find` (the learning-rate range test before a run) and `nnlab runs` (the run directories there are)."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app
from nnlab.config import load_config
from nnlab.errors import NnlabError
from nnlab.progress import plural


@app.command("lr-find")
def lr_find(config: Path = typer.Argument(..., help="Experiment TOML file."),
            set_: list[str] = typer.Option([], "--set", help="Override a config value: section.key=value "
                                                             "(repeatable)."),
            out: Path | None = typer.Option(None, "--out", help="Folder for lr_find.png and lr_find.json "
                                                                "(default runs/<name>-lr-find/)."),
            steps: int = typer.Option(100, "--steps", min=10, help="Batches of the test (it stops earlier when "
                                                                   "the loss diverges)."),
            start_lr: float = typer.Option(1e-7, "--start-lr", help="First learning rate."),
            end_lr: float = typer.Option(10.0, "--end-lr", help="Last learning rate.")) -> None:
    """Leslie Smith's range test: train from the initial weights with an exponentially growing learning
    rate, plot the smoothed loss and suggest optim.lr (steepest descent and fastai's valley rule).
    Nothing but the plot and a JSON is written.

    Example: nnlab lr-find recipes/digits-lenet.toml
    """
    cfg = load_config(config, set_)  # before torch loads: a typo answers at once
    from nnlab.training.lr_find import lr_find_for  # heavy (torch): imported when the command runs

    result, png = lr_find_for(cfg, out, steps=steps, start_lr=start_lr, end_lr=end_lr)
    stop = "stopped when the loss diverged" if result.diverged else "ran to the end"
    typer.echo(f"{len(result.lrs)} steps from {result.lrs[0]:.2g} to {result.lrs[-1]:.2g} ({stop})")
    typer.echo(f"steepest descent at lr {result.steepest:.3g}; valley at lr {result.valley:.3g}")
    typer.echo(f"suggested: --set optim.lr={result.suggestion:.3g}")
    typer.echo(f"plot: {png}")


@app.command("runs")
def runs(root: Path = typer.Argument(Path("runs"), help="Folder to search for run directories (default runs/)."),
         remove_failed_: bool = typer.Option(False, "--remove-failed",
                                             help="Delete the failed run directories (no checkpoint, nothing "
                                                  "to resume).")) -> None:
    """A table of run directories: status (finished, interrupted, failed), epochs, main metric, age.

    Example: nnlab runs runs/ --remove-failed
    """
    from nnlab.runs.listing import format_runs, list_runs, remove_failed  # numpy: loaded when the command runs

    if not root.is_dir():
        raise NnlabError(f"{root}: no such folder")
    rows = list_runs(root)
    typer.echo(format_runs(rows, root))
    if remove_failed_:
        gone, kept = remove_failed(rows)
        typer.echo(f"removed {plural(len(gone), 'failed run')}" + "".join(f"\n  {p}" for p in gone))
        for path, reason in kept:
            typer.echo(f"kept {path}: {reason}")
