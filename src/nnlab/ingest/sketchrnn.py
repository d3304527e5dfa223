"""sketch-rnn's ``<word>.npz`` / ``<word>.full.npz`` files: stroke-3 drawings in train/valid/test.

Each key holds an object array of (n, 3) int16 arrays (dx, dy, pen_lift; `nnlab.strokes.stroke3`),
which numpy stores as a pickle. Pickles run code, so these files are never given to
``np.load(allow_pickle=True)``: the zip is opened here, each member's ``.npy`` header read with
``numpy.lib.format``, and an object array unpickled by `_ArrayUnpickler`, which builds numpy arrays
and dtypes and nothing else. What comes out must be a 1-D array of (n, 3) arrays of an integer or
float dtype; anything else is refused with one line naming the file and key.

The files have no key_id: each drawing gets a synthetic one made of its word, split and index
(`synthetic_key_ids`), the same every time the file is read.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.fileio import atomic_output

try:  # numpy >= 2 (files written by numpy 1.x name numpy.core.multiarray, mapped here)
    from numpy._core.multiarray import _reconstruct  # numpy 2's name (a try, not a function)
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # numpy 1's name

# sketch-rnn's keys, in file order, and the store's split of each
SPLITS = {"train": "train", "valid": "val", "test": "test"}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
ROW_DTYPES = (np.int16, np.int32, np.int64, np.uint8, np.float32, np.float64)
_ALLOWED = {("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
MAX_MEMBER_BYTES = 8 << 30  # one key's .npy, uncompressed (a .full.npz of a large word is a few hundred MB)
_INDEX_BITS = 25  # drawings per split a synthetic key_id can number (33M)
_SPLIT_BITS = 2


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and dtypes only: any other global (os.system,
    builtins.eval, ...) is refused before it is looked up, so nothing of the file runs."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def is_sketchrnn_file(path: Path) -> bool:
    """Whether a file name is sketch-rnn's (``.npz``)."""
    return Path(path).name.lower().endswith(".npz")


def word_of_npz_file(path: Path) -> str:
    """'cat.npz' or 'cat.full.npz' -> 'cat' (sketch-rnn names files by word, spaces kept)."""
    name = Path(path).name
    for suffix in (".npz", ".full"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _read_member(zf: zipfile.ZipFile, member: str, where: str) -> np.ndarray:
    """One .npy member: a plain array read without pickle, an object array through `_ArrayUnpickler`."""
    if zf.getinfo(member).file_size > MAX_MEMBER_BYTES:
        raise DataError(f"{where}: {zf.getinfo(member).file_size:,} bytes uncompressed, over the "
                        f"{MAX_MEMBER_BYTES:,} a sketch-rnn key holds")
    with zf.open(member) as raw:
        f = io.BytesIO(raw.read(MAX_MEMBER_BYTES + 1))
    version = np.lib.format.read_magic(f)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = header(f)
    if not dtype.hasobject:
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    if dtype != np.dtype(object) or len(shape) != 1:
        raise DataError(f"{where}: a {dtype} array of shape {shape}, expected drawings (an object array)")
    try:
        arr = _ArrayUnpickler(f, encoding="latin1").load()  # latin1: the files of Python 2's numpy
    except Exception as exc:  # any failure of a hostile or damaged pickle is the same refusal
        raise DataError(f"{where}: not a sketch-rnn drawing array ({exc}); nothing of it was run") from None
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise DataError(f"{where}: the pickled data is not the {shape} array its header announces")
    return arr


def _check_drawings(arr: np.ndarray, where: str) -> list[np.ndarray]:
    """The drawings of one key as (n, 3) arrays; DataError naming the first bad one."""
    if arr.dtype != object:
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype.type not in ROW_DTYPES:
            raise DataError(f"{where}: a {arr.dtype} array of shape {arr.shape}, expected (n, 3) stroke-3 drawings")
        return list(arr)
    out = []
    for k, d in enumerate(arr):
        if not isinstance(d, np.ndarray) or d.dtype.type not in ROW_DTYPES or d.ndim != 2 or d.shape[1] != 3:
            what = f"a {d.dtype} array of shape {d.shape}" if isinstance(d, np.ndarray) else type(d).__name__
            raise DataError(f"{where}: drawing {k} is {what}, expected an (n, 3) integer or float array")
        out.append(d)
    return out


def read_sketchrnn(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """The drawings of a sketch-rnn file by store split ("train", "val", "test"), as (n, 3) arrays.

    DataError (one line naming the file and key) for a file that is not a zip of .npy members, a
    key other than train/valid/test, a pickle that builds anything but numpy arrays, or an array
    that is not (n, 3) of int16/int32/int64/uint8/float."""
    path = Path(path)
    out: dict[str, list[np.ndarray]] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a sketch-rnn .npz file ({exc})") from None
    with zf:
        for member in zf.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            where = f"{path}: key {key!r}"
            if key not in SPLITS:
                raise DataError(f"{where}: not a sketch-rnn key (expected {', '.join(SPLITS)})")
            try:
                arr = _read_member(zf, member, where)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(f"{where}: unreadable ({exc})") from None
            out[SPLITS[key]] = _check_drawings(arr, where)
    if not out:
        raise DataError(f"{path}: no train, valid or test key; not a sketch-rnn file")
    return out


def synthetic_key_ids(word: str, split: str, indices: np.ndarray) -> np.ndarray:
    """Deterministic int64 key_ids for drawings that have none: 36 bits of a hash of the word
    (FNV-1a), 2 of the split, 25 of the index in that split (positive, distinct within a word)."""
    h = 0xCBF29CE484222325
    for b in word.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    idx = np.asarray(indices, np.int64)
    if len(idx) and idx.max() >= 1 << _INDEX_BITS:
        raise DataError(f"{word}: {split} holds over {1 << _INDEX_BITS:,} drawings, more than synthetic key_ids number")
    word_bits = (h >> 28) & ((1 << 36) - 1)
    return np.int64(word_bits << (_SPLIT_BITS + _INDEX_BITS) | SPLIT_CODES[split] << _INDEX_BITS) | idx


def iter_sketchrnn(path: str | os.PathLike, block: int = 16384) -> Iterator[tuple[str, int, list[np.ndarray]]]:
    """(store split, index of the first drawing, drawings) blocks of a file, in key order."""
    for split, drawings in read_sketchrnn(path).items():
        for a in range(0, len(drawings), block):
            yield split, a, drawings[a:a + block]


def write_sketchrnn(path: str | os.PathLike, splits: dict[str, Sequence[np.ndarray]]) -> int:
    """Write drawings (store split -> (n, 3) int16 arrays) as sketch-rnn does: np.savez_compressed
    of object arrays under train/valid/test (an absent split is an empty array). Returns the count."""
    arrays = {}
    for key, split in SPLITS.items():
        ds = list(splits.get(split, []))
        a = np.empty(len(ds), dtype=object)
        for k, d in enumerate(ds):
            a[k] = np.asarray(d, np.int16)
        arrays[key] = a
    with atomic_output(Path(path), "wb") as f:
        np.savez_compressed(f, **arrays)
    return sum(len(a) for a in arrays.values())
