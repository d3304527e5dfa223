"""Image files: which suffixes are images, and reading one as uint8 (the one image reader)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from nnlab.errors import DataError

PathLike = str | os.PathLike

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".pnm", ".bmp",
                            ".tif", ".tiff", ".webp", ".gif"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_PIL_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
               ValueError, EOFError)


class ImageTooLargeError(DataError):
    """An image with more pixels than the caller allows (checked from its header, before decoding)."""


def read_image(path: PathLike | BinaryIO, name: str | None = None, max_pixels: int | None = None,
               reduce_to: int | None = None) -> np.ndarray:
    """One image file (or a binary file object) as uint8: (H, W) when grayscale, else (H, W, 3) RGB.

    16-bit grey is divided by 257 and float grey in 0..1 multiplied by 255; alpha
    is dropped. A missing, unreadable or truncated file is a DataError naming it
    (`name` when given, for file objects); so is an image over Pillow's pixel limit
    (a decompression bomb), and one over `max_pixels` (ImageTooLargeError).
    `reduce_to`: an image whose sides are both at least twice this may come back smaller, each
    side still at least `reduce_to` (a JPEG decoded at 1/2, 1/4 or 1/8 of its size, others shrunk
    by an integer factor, averaging boxes of pixels): a server bounds the memory of a large upload.
    """
    shown = name or path
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # the limit below replaces Pillow's warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ImageTooLargeError(f"image {shown}: {img.width} x {img.height} pixels; at most "
                                         f"{max_pixels:,} pixels are allowed")
            if reduce_to is not None and img.format == "JPEG":
                img.draft(img.mode, (reduce_to, reduce_to))  # decodes at a reduced scale, sides >= reduce_to
            if img.mode in _WIDE_GRAY_MODES:
                values = np.asarray(img, dtype=np.float64)
                top = values.max(initial=0.0)
                if img.mode == "F" and top <= 1.0:
                    values = values * 255.0
                elif top > 255:
                    values = values / 257.0
                return np.rint(values).clip(0, 255).astype(np.uint8)
            img = img.convert("L" if img.mode in _GRAY_MODES else "RGB")
            factor = min(img.width, img.height) // reduce_to if reduce_to else 1
            if factor >= 2:
                img = img.reduce(factor)
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"image file not found: {shown}") from None
    except DataError:  # ours already (a DataError is a ValueError, which _PIL_ERRORS catches)
        raise
    except Image.DecompressionBombError as err:  # over Pillow's own limit: too large, not corrupt
        raise ImageTooLargeError(f"image {shown}: {_plain(err, path, shown)}") from None
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image {shown}: {_plain(err, path, shown)} (corrupt or truncated?)") from None


def image_size(path: PathLike | BinaryIO, name: str | None = None) -> tuple[int, int]:
    """(width, height) from an image's header, nothing decoded; DataError when it has none readable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"image {name or path}: {_plain(err, path, name or path)}") from None
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image {name or path}: {_plain(err, path, name or path)} "
                        "(corrupt or truncated?)") from None


def verify_image(path: Path, how: str) -> None:
    """Check that an image file reads: "full" decodes it (as `read_image`), "header" only checks its header."""
    if how == "full":
        read_image(path)
        return
    try:
        with Image.open(path) as img:
            img.verify()
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err} (corrupt or truncated?)") from None


def _plain(err: BaseException, path, shown) -> str:
    """Pillow's message without the repr of a file object it names (`<_io.BytesIO object at 0x...>`)."""
    text = str(err)
    if not isinstance(path, (str, os.PathLike)):
        text = text.replace(repr(path), str(shown))
    return text
