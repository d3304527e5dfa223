"""`nnlab lr-find`: the learning-rate range test before a run."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app


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
    from nnlab.api import make_config  # heavy (torch): imported when the command runs
    from nnlab.training.lr_find import lr_find_for  # heavy (torch): imported when the command runs

    cfg = make_config(config, set_)
    result, png = lr_find_for(cfg, out, steps=steps, start_lr=start_lr, end_lr=end_lr)
    stop = "stopped when the loss diverged" if result.diverged else "ran to the end"
    typer.echo(f"{len(result.lrs)} steps from {result.lrs[0]:.2g} to {result.lrs[-1]:.2g} ({stop})")
    typer.echo(f"steepest descent at lr {result.steepest:.3g}; valley at lr {result.valley:.3g}")
    typer.echo(f"suggested: --set optim.lr={result.suggestion:.3g}")
    typer.echo(f"plot: {png}")
