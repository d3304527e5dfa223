"""The one progress-bar helper used everywhere (tqdm: on stderr on a terminal, the notebook widget in
Jupyter), and the words of progress messages (plurals, durations)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm draws its notebook widget)."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = True, disable: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar: on stderr on a terminal, tqdm's widget in Jupyter, none otherwise (a log file must not
    fill with bars). NNLAB_PROGRESS=1 forces it on, =0 off."""
    notebook = in_notebook()
    if disable is None:
        forced = os.environ.get("NNLAB_PROGRESS")
        disable = forced == "0" if forced in ("0", "1") else not (notebook or sys.stderr.isatty())
    if notebook:
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable, **kwargs)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable,
                dynamic_ncols=True, file=sys.stderr, **kwargs)

def plural(n: int, word: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def format_seconds(seconds: float) -> str:
    """'42 s', '3:07', '1:02:03'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
