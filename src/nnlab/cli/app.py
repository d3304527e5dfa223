"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

from nnlab.version import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Train, compare and ship image recognizers from one config file.")
data_app = typer.Typer(no_args_is_help=True, help="Quick, Draw! stroke data: prepare, inspect, export, synthesize.")
app.add_typer(data_app, name="data")

state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nnlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Train, compare and ship image recognizers from one config file.

    Example: nnlab run recipes/digits-lenet.toml
    """
    state["debug"] = debug


def plain_metavars(command):
    """Readable placeholders in help and usage (CONFIG, PATH, N) instead of the Python types typer prints
    (`<bool>`, `<list[str]>`, `{config}`); a metavar a command sets itself is kept."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            # the command's own metavar (MODEL, INPUT...) or the name; the "..." of several comes from nargs
            word = (param.metavar or param.name.upper().replace("_", "-")).removesuffix("...")
            param.metavar = word
            # typer writes a required argument as {name} in usage and its Python type in help
            param._usage_display_name = (lambda w=word, p=param: (w if p.required else f"[{w}]")
                                         + ("..." if p.nargs != 1 else ""))
            param.display_type_rich = lambda ctx: None
        elif param.metavar is None:
            param.metavar = _type_word(getattr(param, "type_descriptor", None))
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
    return command


def _type_word(desc) -> str:
    annotation = str(getattr(desc, "annotation", ""))
    if getattr(desc, "is_choice", False):
        return "|".join(map(str, desc.choices or ()))
    if getattr(desc, "is_path", False) or "Path" in annotation:
        return "PATH"
    if "int" in annotation:
        return "N"
    if "float" in annotation:
        return "X"
    return "TEXT"
