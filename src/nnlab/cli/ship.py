"""Ship commands: export a model, serve the doodle demo or the image demo."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app
from nnlab.errors import NnlabError


@app.command()
def export(run_dir: Path = typer.Argument(..., help="Run directory of a torch model: on drawings, an image "
                                                    "classifier or an embedding model."),
           format_: str = typer.Option("onnx", "--format", help="Export format: onnx."),
           out: Path = typer.Option(..., "--out", help="Directory to write (model.onnx, classes.txt, "
                                                       "preprocessing.json; samples.ndjson for drawings)."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export already at --out (any "
                                          "other non-empty folder is refused).")) -> None:
    """Export a run's best checkpoint as ONNX (dynamic batch), checked against torch.

    Example: nnlab export runs/doodles-demo-<stamp> --format onnx --out export/
    """
    from nnlab.inference.models.export import export_onnx  # heavy (torch): imported when the command runs

    if format_ != "onnx":
        raise NnlabError(f"--format {format_!r}: only 'onnx' is supported")
    result = export_onnx(run_dir, out, overwrite=overwrite)
    typer.echo(f"onnxruntime matches torch on {result.checked_inputs} inputs "
               f"(max abs difference {result.max_abs_diff:.2g})")
    typer.echo(f"exported to {result.out_dir}")


@app.command()
def serve(path: Path = typer.Argument(..., help="A run directory (torch) or an `nnlab export` directory "
                                                "(onnxruntime)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 0.0.0.0 exposes the demo to "
                                                               "your network."),
          port: int = typer.Option(8000, "--port", min=1, max=65535),
          threads: int | None = typer.Option(None, "--threads", min=1,
                                             help="Threads of one model call (default 1 for onnxruntime, "
                                                  "torch's default for a run)."),
          access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
          gallery: Path | None = typer.Option(None, "--gallery", help="An embedding model's gallery (nnlab gallery "
                                                                      "build): the page identifies people."),
          allowed_host: list[str] = typer.Option([], "--allowed-host", help="Answer only requests for this Host "
                                                 "header (repeat for several; default: any)."),
          docs: bool = typer.Option(False, "--docs", help="Serve the API docs at /api/docs (loads Swagger UI "
                                                         "from a CDN)."),
          max_concurrent: int = typer.Option(16, "--max-concurrent", min=1, help="Image demo: uploads decoded or "
                                             "computed at once, large ones (over 2 MP) on at most half the cores (503 beyond)."),
          max_connections_per_client: int = typer.Option(64, "--max-connections-per-client", min=1,
                                                         help="Open connections from one IP address (503 beyond); "
                                                              "behind a proxy every client has the proxy's.")) -> None:
    """Serve a demo: the doodle page that guesses while you draw, or for an image model a page where
    you drop an image and see the top-k classes (or, with --gallery, who it is).

    Example: nnlab serve export/ --port 8001
    """
    from nnlab.serve.app import serve as run_server  # heavy (torch): imported when the command runs

    run_server(path, host=host, port=port, threads=threads, access_log=access_log, gallery=gallery,
               allowed_hosts=allowed_host or None, docs=docs, max_concurrent=max_concurrent,
               max_connections_per_client=max_connections_per_client,
               announce=lambda url: typer.echo(f"serving {path} at {url} (Ctrl+C to stop)"))
