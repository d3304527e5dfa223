"""The registry of image data set kinds (`load_source(kind, **options)`):

- ``digits``: scikit-learn's 8x8 digits, no options.
- ``idx``: MNIST / Fashion-MNIST IDX files in a folder, optionally downloaded.
- ``npz``: two arrays of an ``.npz`` file.
- ``folder``: one sub-folder of image files per class.
- ``bitmap``: Google's Quick, Draw! ``full_numpy_bitmap_<word>.npy`` files.
- ``csv``: rows of pixel values then the class (UCI optdigits style).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nnlab.errors import ConfigError
from nnlab.ingest.idx import load_idx_source
from nnlab.ingest.images import (
    ImageSource,
    load_bitmap_source,
    load_csv_source,
    load_digits_source,
    load_folder_source,
    load_npz_source,
)

LOADERS: dict[str, Callable[..., ImageSource]] = {
    "digits": load_digits_source,
    "idx": load_idx_source,
    "npz": load_npz_source,
    "folder": load_folder_source,
    "bitmap": load_bitmap_source,
    "csv": load_csv_source,
}


def loader_options(kind: str) -> list[str]:
    """The option names a loader kind accepts."""
    return list(inspect.signature(_loader(kind)).parameters)


def _loader(kind: str) -> Callable[..., ImageSource]:
    if kind not in LOADERS:
        raise ConfigError(f"unknown data kind '{kind}'; known kinds: {', '.join(LOADERS)}")
    return LOADERS[kind]


def load_source(kind: str, **options: Any) -> ImageSource:
    """Load the image data set of `kind` with its options (see each loader's docstring).

    Unknown kinds and options are ConfigErrors listing what is allowed; missing or
    malformed files are DataErrors naming the file.
    """
    loader = _loader(kind)
    allowed = loader_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"data kind '{kind}' has no option {', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(allowed) or 'none'}")
    return loader(**options)
