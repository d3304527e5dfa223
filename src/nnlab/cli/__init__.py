"""Command line: parse, call the library, print. One module per group of commands."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click
import typer

from nnlab.cli import core, data, faces, ship, study, tune  # noqa: F401  (registers the commands)
from nnlab.cli.app import app, plain_metavars, state
from nnlab.errors import NnlabError
from nnlab.fileio import disk_full_error, is_disk_full


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `kill` send before a kill), unwound as Ctrl-C is: the run keeps its last
    checkpoint and the user is told how to resume; the exit status is 143 (128 + SIGTERM)."""


def _on_sigterm(signum, frame) -> None:
    state["sigterm"] = True  # typer turns any KeyboardInterrupt into Exit(130): this tells them apart
    raise Terminated


def main() -> None:
    """Entry point: a user error prints one line on stderr and exits 2; Ctrl-C exits 130 and SIGTERM 143,
    both with the `nnlab resume` line of the run being trained."""
    on_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    state.pop("sigterm", None)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    try:
        _main()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main() -> None:
    try:
        code = plain_metavars(typer.main.get_command(app))(standalone_mode=False)
        if code == 130:  # click turns Ctrl-C into Exit(130), which non-standalone mode returns
            raise Terminated if state.pop("sigterm", False) else KeyboardInterrupt
    except NnlabError as exc:
        if state["debug"] or "--debug" in sys.argv:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        run_dir = state.get("run_dir")
        if run_dir and not Path(run_dir).is_dir():  # stopped in its first epoch: the run removed itself
            what += " in the first epoch; nothing was kept"
        print(f"{what}; resume with nnlab resume {run_dir}" if run_dir and Path(run_dir).is_dir() else what,
              file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
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
