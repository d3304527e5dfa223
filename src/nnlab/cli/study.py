"""`nnlab study`: a grid of variants x seeds, resumable, with an honest comparison report."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app
from nnlab.errors import NnlabError
from nnlab.progress import plural

GRID_HELP = ("A variant: NAME=key=value[,key=value...] (repeatable); replaces the config's study.grid. "
             "Example: --grid relu=model.name=lenet_alpha")


@app.command()
def study(config: Path = typer.Argument(..., help="Experiment TOML file (its study section: grid, seeds, metric)."),
          grid: list[str] = typer.Option([], "--grid", help=GRID_HELP),
          seeds: int | None = typer.Option(None, "--seeds", min=1, help="Run seeds 0..K-1 (default: study.seeds)."),
          set_: list[str] = typer.Option([], "--set", help="Override a value in every cell: section.key=value "
                                                           "(repeatable; a variant's own overrides win)."),
          out: Path | None = typer.Option(None, "--out", help="Study directory (default studies/<name>/); "
                                                              "running again resumes it."),
          workers: int | None = typer.Option(None, "--workers", min=1,
                                             help="Cells trained in parallel (default: min(cells, cores))."),
          executor: str | None = typer.Option(None, "--executor",
                                              help="Where cells run: pool (processes here, the default), local, "
                                                   "slurm or debug (submitit's executors; pip install "
                                                   "'nnlab[cluster]'); default study.executor."),
          show_sbatch: bool = typer.Option(False, "--show-sbatch",
                                           help="Print the job-array script sbatch would receive for the "
                                                "unfinished cells ([study.slurm]) and exit.")) -> None:
    """Train every cell (variant x seed) as its own run, skipping finished ones, then compare the variants:
    mean ± std, parameters, time, Welch's t-test with Holm's adjustment and a plain verdict (report.md,
    report.json, plots/).

    Example: nnlab study recipes/lenet-ablation-digits.toml --seeds 2 --set train.epochs=3

    On a Slurm cluster: --executor slurm (one job per cell, as one job array; [study.slurm] sets the
    partition, time, GPUs and CPUs per cell); running the same command again resubmits only unfinished cells.
    """
    from nnlab.studies.plan import cell_state, plan_study  # numpy: loaded when the command runs

    # the study plans it again; planning here answers a typo in the config, --set or --grid before torch loads
    plan = plan_study(config, set_, grid, seeds, out, workers, executor=executor)
    if show_sbatch:
        from nnlab.studies.executors import sbatch_script  # submitit: loaded when asked for

        unfinished = sum(cell_state(c) != "done" for c in plan.cells)
        typer.echo(sbatch_script(plan.settings.slurm, plan.name, plan.out, max(1, unfinished)), nl=False)
        return
    from nnlab.api import study as run_study  # heavy (torch): imported when the command runs
    from nnlab.studies.report import format_tables  # heavy (torch): imported when the command runs

    def announce(plan) -> None:
        where = "" if plan.settings.executor == "pool" else f", submitit {plan.settings.executor} jobs"
        typer.echo(f"study directory: {plan.out} ({len(plan.variants)} variants x {len(plan.settings.seeds)} seeds"
                   f"{where})")

    result = run_study(config, grid=grid, seeds=seeds, overrides=set_, out=out, workers=workers,
                       announce=announce, executor=executor).outcome
    plan = result.study
    ran = sum(c.status in ("trained", "resumed") for c in result.cells)
    typer.echo(f"{plural(ran, 'cell')} trained now, {sum(c.status == 'done' for c in result.cells)} already finished, "
               f"{len(result.failed)} failed; {plural(result.workers, 'worker')}, {result.wall_seconds:.0f} s")
    typer.echo(format_tables(result.report))
    for c in result.failed:
        typer.echo(f"failed {c.cell.label}: {c.error}", err=True)
    typer.echo(f"report: {plan.out / 'report.md'}")
    if result.failed:
        raise NnlabError(f"{len(result.failed)} of {len(result.cells)} cells failed (see above and "
                         f"{plan.out / 'report.md'}); run the same command again to retry only those")
