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
    """A tqdm bar on stderr; silent when NNLAB_PROGRESS=0 or stderr is not a terminal in CI."""
    if disable is None:
        disable = os.environ.get("NNLAB_PROGRESS", "1") == "0" or (
            os.environ.get("CI") == "true" and not sys.stderr.isatty())
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable,
                dynamic_ncols=True, file=sys.stderr, **kwargs)
