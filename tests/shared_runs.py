"""What a test session makes once (trained runs, exports), shared by every test module and, under
pytest-xdist (`make test` runs two workers), by every worker: the first worker to ask builds it under a
file lock, the others wait for it and read its folder (not a test module itself).

The session's folder is made by the controlling process (conftest's `pytest_configure`), handed to the
workers in NNLAB_TEST_SHARED and removed when the session ends."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

ENV = "NNLAB_TEST_SHARED"


def start_session() -> Path:
    """The controller's shared folder, made now and announced to the workers it starts (their environment)."""
    root = Path(tempfile.mkdtemp(prefix="nnlab-tests-"))
    os.environ[ENV] = str(root)
    return root


def end_session() -> None:
    root = os.environ.pop(ENV, None)
    if root:
        shutil.rmtree(root, ignore_errors=True)


@functools.cache
def session_root() -> Path:
    """The session's shared folder (a private one, removed at exit, outside a pytest session)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    root = Path(tempfile.mkdtemp(prefix="nnlab-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@contextmanager
def session_lock(name: str) -> Iterator[Path]:
    """Hold the session-wide lock called `name` (one worker at a time); yields the shared folder."""
    root = session_root()
    with FileLock(root / f"{name}.lock", timeout=900):
        yield root


def made_once(build: Callable[[], Path]) -> Callable[[], Path]:
    """`build()` (a folder it makes under session_root()) run once per session across workers: a worker
    that finds it done reads the path its builder wrote; a build that fails is tried again by the next."""

    @functools.cache
    @functools.wraps(build)
    def once() -> Path:
        with session_lock(build.__name__) as root:
            done = root / f"{build.__name__}.done"
            if done.is_file():
                return Path(done.read_text())
            path = build()
            done.write_text(str(path))
            return path

    return once
