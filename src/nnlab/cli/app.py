"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, compare and ship image recognizers from one config file.")
data_app = typer.Typer(no_args_is_help=True, help="Quick, Draw! stroke data: prepare, inspect, export, synthesize.")
app.add_typer(data_app, name="data")

state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors.")) -> None:
    state["debug"] = debug
