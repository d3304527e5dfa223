"""Small file helpers every layer shares: atomic text writes, class lists, gzip detection.

`classes.txt` (one class name per line, UTF-8, in class order) is read and written here only:
by runs, stroke stores, exports and the class vocabulary.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from nnlab.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
KILL_AT_ENV = "NNLAB_TEST_KILL_AT"
_kill_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: kill this process with SIGKILL (no cleanup, as a power cut) when the environment
    variable NNLAB_TEST_KILL_AT is `name:N` and this is the N-th time `name` is reached. The kill
    test uses it to prove that every moment of a run can be resumed; unset, it costs a dict lookup."""
    want = os.environ.get(KILL_AT_ENV)
    if not want or not want.startswith(name + ":"):
        return
    _kill_counts[name] = _kill_counts.get(name, 0) + 1
    if str(_kill_counts[name]) == want.rsplit(":", 1)[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or directory (0777) gets under the current umask; mkstemp and
    mkdtemp make theirs private (0600, 0700), which an atomic rename would otherwise keep."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """An open temporary file next to `path` (for a write-then-rename) with the mode that `open`
    would have given `path` itself, so that a served export or a shared run stays readable."""
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, suffix=".tmp")
    os.fchmod(fd, umask_mode())
    return fd, tmp


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to a temporary file beside `path`, then rename it over `path`:
    a crash never leaves a half-written file."""
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    with disk_full_guard(path, Path(tmp), kept=f"{path.name} is as it was"):
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        kill_point("text-tmp-written")
        os.replace(tmp, path)
    return path


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# what torch's C++ writer says when a write fails (it keeps no errno)
_WRITE_FAILED = ("basic_ios::clear", "file write failed", "No space left on device", "unexpected pos")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception is a failed write for want of space (OSError ENOSPC/EDQUOT, or torch's
    RuntimeError from its C++ stream writer)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _WRITE_FAILED)


@contextlib.contextmanager
def disk_full_guard(target: Path, *partial: Path, kept: str = "nothing was written") -> Iterator[None]:
    """Turn a full disk while writing `target` into one DataError saying so and what was kept; the
    `partial` files are removed (whatever the error)."""
    try:
        yield
    except BaseException as exc:
        for p in partial:
            with contextlib.suppress(OSError):
                Path(p).unlink()
        if is_disk_full(exc):
            raise DataError(f"{target}: the disk is full (no space left on device); {kept}. "
                            "Free some space and run the command again") from None
        raise


def write_classes(path: Path, classes: Sequence[str]) -> Path:
    """Write a class list (`classes.txt`): one name per line, in class order."""
    return atomic_write_text(path, "".join(f"{c}\n" for c in classes))


def read_classes(path: Path) -> list[str]:
    """Read a class list: one name per line, in class order (blank lines and surrounding spaces ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such class list (classes.txt)") from None
    except OSError as exc:
        raise DataError(f"cannot read class list {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); a class list has one name per line") from None
    return [line.strip() for line in lines if line.strip()]


def is_gzip(path: Path) -> bool:
    """Whether a file is gzip-compressed, by its magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
