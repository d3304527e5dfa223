"""The one progress-bar helper used everywhere (tqdm, on stderr)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = True, disable: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr, shown on a terminal (NNLAB_PROGRESS=1 forces it on, =0 off)."""
    if disable is None:
        forced = os.environ.get("NNLAB_PROGRESS")
        disable = forced == "0" if forced in ("0", "1") else not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable,
                dynamic_ncols=True, file=sys.stderr, **kwargs)
