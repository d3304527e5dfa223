"""`nnlab` commands run in the test process (not a test module itself): the real entry point
`nnlab.cli.main` with its own argv, stdout and stderr, minus the 1 to 6 s a fresh interpreter pays to
start and import torch. A test whose subject is the process boundary (signals, torchrun, the server,
torch-free `data` commands) keeps a real subprocess and says so."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
import warnings
from dataclasses import dataclass
from unittest import mock


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, ok: bool = True) -> CliResult:
    """`nnlab ARGS...` in process; with ok, assert it exits 0 (stderr in the failure message)."""
    from nnlab.cli import main, state

    argv = ["nnlab", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    state.pop("run_dir", None)  # left by a previous command's run; a fresh process has none
    with (mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          warnings.catch_warnings(record=True) as caught):
        warnings.simplefilter("always")
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # what the interpreter does with an exception main() lets through (--debug)
            traceback.print_exc(file=err)
            code = 1
    _print_warnings(caught, err)
    result = CliResult(code, out.getvalue(), err.getvalue())
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def _print_warnings(caught, stream) -> None:
    """Warnings on stderr as a fresh interpreter shows them (deprecations of imported libraries aside), so
    that a test can still see them although pytest would otherwise collect them."""
    for w in caught:
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            stream.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(*args, port: int, timeout_s: float = 120.0):
    """`nnlab serve ARGS... --port PORT` in a subprocess (the process boundary is what such a test is about),
    returned once /api/health answers 200 with the health JSON; output to the process's stdout (text)."""
    proc = subprocess.Popen([sys.executable, "-m", "nnlab", "serve", *map(str, args), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NNLAB_PROGRESS": "0"})
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                return proc, json.load(r)
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the server did not answer within {timeout_s:g} s") from None
            time.sleep(0.3)
