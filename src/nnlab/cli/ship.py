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
                                          "other non-empty folder is refused)."),
           quantize: str | None = typer.Option(None, "--quantize", help="int8: model.onnx is the INT8 model "
                                               "(onnxruntime quantization), scored against the float one on the "
                                               "validation split."),
           max_drop: float = typer.Option(0.01, "--max-drop", help="With --quantize: refuse (write nothing) when "
                                          "the INT8 model's validation MAP@3 / accuracy / rank-1 is lower by more."),
           quantize_method: str = typer.Option("auto", "--quantize-method", help="auto (static for CNNs, dynamic "
                                               "otherwise), static (QDQ, calibrated on validation batches) or "
                                               "dynamic.")) -> None:
    """Export a run's best checkpoint as ONNX (dynamic batch), checked against torch; optionally INT8.

    Example: nnlab export runs/doodles-demo-<stamp> --format onnx --out export/ [--quantize int8]
    """
    from nnlab.inference.models.export import export_onnx  # heavy (torch): imported when the command runs

    if format_ != "onnx":
        raise NnlabError(f"--format {format_!r}: only 'onnx' is supported")
    from nnlab.inference.models.quantize import describe  # heavy (onnx): imported when the command runs

    result = export_onnx(run_dir, out, overwrite=overwrite, quantize=quantize, max_drop=max_drop,
                         quantize_method=quantize_method)
    typer.echo(f"onnxruntime matches torch on {result.checked_inputs} inputs "
               f"(max abs difference {result.max_abs_diff:.2g})")
    if result.quantization:
        typer.echo(describe(result.quantization))
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
                                                              "behind a proxy every client has the proxy's."),
          workers: int = typer.Option(1, "--workers", min=1, help="Server processes answering on the port, each with "
                                      "its own model: 2 on two cores served the doodle demo 1.6-1.8x the requests/s of 1. "
                                      "The connection cap and --max-concurrent are shared among them.")) -> None:
    """Serve a demo: the doodle page that guesses while you draw, or for an image model a page where
    you drop an image and see the top-k classes (or, with --gallery, who it is).

    Example: nnlab serve export/ --port 8001
    """
    from nnlab.serve.app import serve as run_server  # heavy (torch): imported when the command runs

    run_server(path, host=host, port=port, threads=threads, access_log=access_log, gallery=gallery,
               allowed_hosts=allowed_host or None, docs=docs, max_concurrent=max_concurrent,
               max_connections_per_client=max_connections_per_client, workers=workers,
               announce=lambda url: typer.echo(f"serving {path} at {url} (Ctrl+C to stop)"))
