"""data commands: prepare, info, export, synth, show (Quick, Draw! stroke stores).

These run without torch: only `data show RUN` (a trained run's guesses) imports it, when called. The stores'
modules (numba, matplotlib) are imported by the command that uses them too, so that the CLI answers
`--help` and a config error in other commands without loading them."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import data_app
from nnlab.errors import NnlabError


@data_app.command("prepare")
def prepare_cmd(
        sources: list[Path] = typer.Argument(..., help="Files or folders: Google ndjson (simplified or raw), "
                                                       "Kaggle CSVs, Google .bin (gzip or not), sketch-rnn "
                                                       "<word>.npz (its train/valid/test split kept)."),
        out: Path = typer.Option(..., "--out", help="Store directory to write."),
        simplify: bool = typer.Option(False, "--simplify", help="Apply Google's simplification to raw drawings."),
        recognized_only: bool = typer.Option(False, "--recognized-only",
                                             help="Drop drawings the game did not recognize."),
        max_per_class: int | None = typer.Option(None, "--max-per-class", min=1,
                                                 help="Keep the first N drawings of each class."),
        on_bad: str = typer.Option("skip", "--on-bad", help="skip: count bad rows by reason; error: stop at "
                                                            "the first, naming file and line."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Parallel processes (default: CPUs)."),
        classes: Path | None = typer.Option(None, "--classes", help="classes.txt fixing the class list and "
                                                                    "order; other words are bad rows."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the stroke store at --out."),
        allow_empty: bool = typer.Option(False, "--allow-empty", help="Write a store even when no drawing "
                                                                      "is left.")) -> None:
    """Pack drawings into a memory-mapped stroke store.

    Example: nnlab data prepare train_simplified/ --out data/quickdraw
    """
    from nnlab.store.prepare import prepare  # heavy (numba): imported when the command runs

    store = prepare(sources, out, simplify=simplify, recognized_only=recognized_only,
                    max_per_class=max_per_class, on_bad=on_bad, workers=workers, classes=classes,
                    overwrite=overwrite, allow_empty=allow_empty)
    m = store.meta
    typer.echo(f"wrote {out}: {m['num_drawings']:,} drawings, {m['num_classes']} classes, "
               f"{m['num_points']:,} points ({m['kind']})")
    if m.get("skipped_total"):
        typer.echo(f"skipped {m['skipped_total']:,} bad rows: "
                   + ", ".join(f"{k} {v:,}" for k, v in m["skipped"].items()))
    for k, v in m.get("filtered", {}).items():
        typer.echo(f"filtered {k}: {v:,}")
    if m.get("split_counts"):
        typer.echo("splits from the files: " + ", ".join(f"{k} {v:,}" for k, v in m["split_counts"].items()))


@data_app.command("info")
def info_cmd(store_path: Path = typer.Argument(..., help="Store directory.")) -> None:
    """Counts per class, skipped rows by reason, sources.

    Example: nnlab data info data/quickdraw
    """
    from nnlab.store.format import StrokeStore  # heavy (numba): imported when the command runs

    store = StrokeStore.open(store_path)
    m = store.meta
    typer.echo(f"{store_path}: {m['kind']} stroke store (format {m['format']} v{m['version']}, "
               f"source: {m.get('source_kind', '?')})")
    typer.echo(f"drawings {len(store):,}  strokes {m['num_strokes']:,}  points {m['num_points']:,}  "
               f"classes {len(store.classes)}  unlabelled {m.get('unlabelled', 0):,}  "
               f"not recognized {m.get('not_recognized', 0):,}")
    if m.get("split_counts"):
        typer.echo("splits from the files (kept over the key_id hash): "
                   + ", ".join(f"{k} {v:,}" for k, v in m["split_counts"].items()))
    counts = store.counts()
    if counts:
        width = max(len(w) for w in counts)
        typer.echo("drawings per class:")
        for w, n in counts.items():
            typer.echo(f"  {w:<{width}}  {n:,}")
    skipped = m.get("skipped", {})
    typer.echo("skipped rows: " + (", ".join(f"{k} {v:,}" for k, v in skipped.items()) if skipped else "none"))
    for ex in m.get("skipped_examples", [])[:10]:
        typer.echo(f"  e.g. {ex['file']}: line {ex['line']}: {ex['reason']}")
    for k, v in m.get("filtered", {}).items():
        typer.echo(f"filtered {k}: {v:,}")
    if m.get("sources"):
        typer.echo(f"sources: {len(m['sources'])} files")


@data_app.command("export")
def export_cmd(store_path: Path = typer.Argument(..., help="Store directory."),
               format_: str = typer.Option("ndjson", "--format", help="ndjson (Google), csv (Kaggle), bin "
                                                                       "(Google binary) or sketchrnn (stroke-3 "
                                                                       ".npz per word)."),
               out: Path = typer.Option(..., "--out", help="Output file (.gz to compress); for sketchrnn a "
                                                           "folder (one <word>.npz each) or one .npz.")) -> None:
    """Write a store's drawings back out in Google's, Kaggle's or sketch-rnn's format.

    Example: nnlab data export data/quickdraw --format ndjson --out drawings.ndjson
    """
    from nnlab.store.export import export  # heavy (numba): imported when the command runs
    from nnlab.store.format import StrokeStore  # heavy (numba): imported when the command runs

    n = export(StrokeStore.open(store_path), out, format_)
    typer.echo(f"wrote {n:,} drawings to {out}")


@data_app.command("synth")
def synth_cmd(classes: int = typer.Option(12, "--classes", min=1, help="Number of shape classes."),
              per_class: int = typer.Option(200, "--per-class", min=1, help="Drawings per class."),
              seed: int = typer.Option(0, "--seed", min=0),
              out: Path = typer.Option(..., "--out", help="Store directory to write."),
              overwrite: bool = typer.Option(False, "--overwrite", help="Replace the stroke store at --out.")) -> None:
    """Procedural doodles (circle, square, triangle, star, house, ...) as a stroke store.

    Example: nnlab data synth --out data/synth
    """
    from nnlab.store.format import StrokeStore  # heavy (numba): imported when the command runs
    from nnlab.strokes.synth import synth_drawings  # heavy (numba): imported when the command runs

    drawings = synth_drawings(classes, per_class, seed)
    store = StrokeStore.from_drawings(drawings, meta={"source_kind": "synthetic",
                                                      "synth": {"classes": classes, "per_class": per_class,
                                                                "seed": seed}})
    store.save(out, overwrite=overwrite)
    typer.echo(f"wrote {out}: {len(store):,} synthetic drawings, {len(store.classes)} classes "
               f"({', '.join(store.classes)})")


@data_app.command("show")
def show_cmd(store_path: Path = typer.Argument(..., help="Store directory, or a run directory: its "
                                                 "validation drawings with the model's guesses."),
             n: int = typer.Option(36, "--n", min=1, help="Drawings to show."),
             class_: str | None = typer.Option(None, "--class", help="Only this class (word or Kaggle label)."),
             out: Path | None = typer.Option(None, "--out", help="PNG to write [default: grid.png, or "
                                             "RUN/plots/samples.png for a run]."),
             wrong: bool = typer.Option(False, "--wrong",
                                        help="A run: only the examples the model got wrong.")) -> None:
    """A labelled grid of drawings as a PNG; for a run directory (drawings or images), its validation
    examples with the model's guesses, wrong ones in red.

    Example: nnlab data show runs/doodles-demo-<stamp>
    """
    if (store_path / "config.toml").is_file():
        from nnlab.inference.samples import show_run_samples  # heavy (torch): only for a run directory

        typer.echo(f"wrote {show_run_samples(store_path, out, n=n, word=class_, wrong_only=wrong)}")
        return
    if wrong:
        raise NnlabError(f"{store_path}: --wrong needs a run directory (a store has no model to be wrong)")
    from nnlab.store.format import StrokeStore  # heavy (numba): imported when the command runs
    from nnlab.store.show import show_grid  # heavy (matplotlib): imported when the command runs

    out = out or Path("grid.png")
    path = show_grid(StrokeStore.open(store_path), n=n, word=class_, out=out)
    typer.echo(f"wrote {path}")
