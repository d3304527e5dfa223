"""Command line: parse, call the library, print. One module per group of commands."""

from __future__ import annotations

import sys

import click
import typer

from nnlab.cli import core, data, faces, ship, study, tune  # noqa: F401  (registers the commands)
from nnlab.cli.app import app, plain_metavars, state
from nnlab.errors import NnlabError
from nnlab.fileio import disk_full_error, is_disk_full


def main() -> None:
    """Entry point: a user error prints one line on stderr and exits 2."""
    try:
        code = plain_metavars(typer.main.get_command(app))(standalone_mode=False)
        if code == 130:  # click turns Ctrl-C into Exit(130), which non-standalone mode returns
            raise KeyboardInterrupt
    except NnlabError as exc:
        if state["debug"] or "--debug" in sys.argv:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        run_dir = state.get("run_dir")
        print(f"interrupted; resume with nnlab resume {run_dir}" if run_dir else "interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            sys.exit(1)
        # a ClickException, from click or from the copy of click that newer typer bundles: both can show()
        if isinstance(exc, click.exceptions.ClickException) or (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            exc.show()
            sys.exit(exc.exit_code)
        if is_disk_full(exc) and not state["debug"]:  # a write with no guard of its own: still one line
            print(f"error: {disk_full_error(getattr(exc, 'filename', None) or 'writing', 'the output may be incomplete')}",
                  file=sys.stderr)
            sys.exit(2)
        raise
