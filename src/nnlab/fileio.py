"""Small file helpers every layer shares: atomic text writes, class lists, gzip detection, and the one
rule for output folders (`check_output_dir`, `staged_output_dir`).

`classes.txt` (one class name per line, UTF-8, in class order) is read and written here only:
by runs, stroke stores, exports and the class vocabulary.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """`atomic_write_text` for bytes (a file put back as it was)."""
    with atomic_output(Path(path), "wb") as fh:
        fh.write(data)
    return Path(path)


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


def check_output_file(path: Path, option: str = "--out") -> Path:
    """Refuse, with one line, an output file that names a folder or a missing parent that is a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{option} {path}: is a folder; give the name of a file to write")
    if path.parent.exists() and not path.parent.is_dir():
        raise DataError(f"{option} {path}: {path.parent} is a file, not a folder")
    return path


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w", **open_args) -> Iterator:
    """An open temporary file beside `path` that replaces `path` when the block ends without error;
    on an error (a full disk: one DataError) the temporary file is removed and `path` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    with disk_full_guard(path, Path(tmp), kept=f"{path.name} is as it was"):
        with open(fd, mode, **open_args) as fh:
            yield fh
        os.replace(tmp, path)


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
            raise disk_full_error(target, kept) from None
        raise


def disk_full_error(target: Path | str, kept: str = "nothing was written") -> DataError:
    """The one line a full disk gives: what was being written, what was kept, what to do."""
    return DataError(f"{target}: the disk is full (no space left on device); {kept}. "
                     "Free some space and run the command again")


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


def read_json_file(file: Path, error: type[Exception] = DataError) -> Any:
    """A JSON file's content; `error` (one line naming the file) when it is not JSON, not UTF-8, nested too
    deep or unreadable. A missing file raises FileNotFoundError, for the caller to say what it expected."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise error(f"{file}: not valid JSON ({str(exc)[:200]})") from None
    except OSError as exc:
        raise error(f"{file}: cannot be read ({exc.strerror})") from None


def is_gzip(path: Path) -> bool:
    """Whether a file is gzip-compressed, by its magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


# --------------------------------------------------------------------------- output folders
# One rule for every folder a command writes (exports, galleries, run copies): it is absent, empty, or
# one that nnlab wrote itself, recognised by its manifest file and by holding nothing else; replacing
# one needs --overwrite; the working directory and its parents are never replaced; the new content is
# built beside it and swapped in whole, so that a kill leaves the old folder or the new one.


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder nnlab writes: the manifest file that marks it and every name it may hold."""

    name: str
    manifest: str
    entries: frozenset[str]

    def owns(self, folder: Path) -> bool:
        names = {p.name for p in folder.iterdir()}
        return self.manifest in names and names <= self.entries


def check_output_dir(path: Path, kind: OutputKind, overwrite: bool = False, option: str = "--out") -> None:
    """Refuse, with one line, to write `kind` at `path` unless the rule above allows it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{option} {path}: is a file; give a folder to write the {kind.name} into")
    here, target = Path.cwd().resolve(), path.resolve()
    if target == here or target in here.parents:
        raise DataError(f"{option} {path}: is the working directory or a parent of it; give a new folder "
                        f"for the {kind.name}")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not kind.owns(path):
        raise DataError(f"{option} {path}: exists and holds files that are not {_a(kind.name)} nnlab wrote; "
                        "choose an empty or new folder (nothing was changed)")
    if not overwrite:
        raise DataError(f"{option} {path}: already holds {_a(kind.name)}; pass --overwrite to replace it, "
                        "or choose another folder")


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


@contextlib.contextmanager
def staged_output_dir(path: Path, kind: OutputKind, overwrite: bool = False,
                      option: str = "--out") -> Iterator[Path]:
    """A fresh folder beside `path` to fill; on success it replaces `path` whole (checked by
    `check_output_dir` before and again after), on failure it is removed and `path` is untouched."""
    path = Path(path)
    check_output_dir(path, kind, overwrite, option)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        os.chmod(tmp, umask_mode(directory=True))
        with disk_full_guard(path, kept=f"{path} is as it was"):
            yield tmp
        check_output_dir(path, kind, overwrite, option)  # again: something may have appeared meanwhile
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_stages(path: Path) -> list[Path]:
    """Remove the folders a killed process left beside `path` while replacing it (`.NAME.partial-PID-*`,
    `.NAME.old-PID-*`: a kill after the swap leaves the old content there); only those whose process
    is gone, so that a writer still at work keeps its own."""
    gone = []
    for stage in Path(path).parent.glob(f".{Path(path).name}.*-*-*"):
        kind, _, rest = stage.name[len(Path(path).name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("partial", "old") and pid.isdigit() and stage.is_dir() and not _alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)
            gone.append(stage)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def replace_dir(new: Path, path: Path) -> None:
    """Put the folder `new` at `path`. An existing folder is swapped out in one atomic exchange
    (Linux renameat2) where the system has it, so that no moment leaves `path` missing; elsewhere
    it is renamed aside first. The old content is then removed (and `new` no longer exists)."""
    if not path.exists():
        os.replace(new, path)
        return
    if _exchange(new, path):
        kill_point("folder-swapped")
        shutil.rmtree(new)  # `new` now holds the old content
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
    os.replace(path, old / "content")
    kill_point("folder-swapped")
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0
