"""Image data sets before splitting: `ImageSource` and the loaders of the in-memory and folder kinds.

A loader turns files (or scikit-learn's bundled digits) into an `ImageSource`: class names,
integer labels and either every image in memory (uint8) or one file per sample, read lazily.
Splitting happens in `nnlab.datasets.splits`; each split then builds its own
`nnlab.datasets.images.ImageDataset` with its own transform, so no split can change another's.
The registry of kinds is `nnlab.ingest.image_kinds`.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nnlab.errors import ConfigError, DataError
from nnlab.ingest.image_files import IMAGE_SUFFIXES, read_image, verify_image
from nnlab.progress import progress

PathLike = str | os.PathLike


@dataclass
class ImageSource:
    """Images and labels of one data set, before splitting.

    Exactly one of `images` (held in memory) and `files` (read lazily, `folder` kind)
    is set. `test_mask` marks samples of the source's official test part, when it
    has one (MNIST's t10k files, optdigits' ``.tes``). `skipped` counts what a loader
    left out on purpose, by reason (for example ``{"unreadable": 2}``).
    """

    classes: list[str]
    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[Path] | None = None
    test_mask: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if (self.images is None) == (self.files is None):
            raise ValueError("ImageSource needs exactly one of images and files")
        n = len(self.images) if self.images is not None else len(self.files)
        if len(self.labels) != n:
            raise DataError(f"{n} images but {len(self.labels)} labels")
        if self.test_mask is not None:
            self.test_mask = np.asarray(self.test_mask, dtype=bool)
            if self.test_mask.shape != self.labels.shape:
                raise ValueError("test_mask must have one entry per sample")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"labels must lie in 0..{len(self.classes) - 1} "
                            f"(one per class name), found {self.labels.min()}..{self.labels.max()}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of `classes`)."""
        return len(self.classes)

    def image(self, index: int) -> np.ndarray:
        """Sample `index` as a uint8 array, (H, W) for grayscale or (H, W, C)."""
        if self.images is not None:
            return self.images[index]
        return read_image(self.files[index])


# --------------------------------------------------------------------------- helpers


def _natural_key(text: str) -> list:
    """Sort key that orders 's2' before 's10' (and '2.pgm' before '10.pgm')."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", text) if part]


def _existing(path: PathLike | None, what: str, kind: str, *, folder: bool) -> Path:
    if path is None:
        raise ConfigError(f"data.path: data kind '{kind}' needs a path ({what})")
    path = Path(path).expanduser()
    if folder and not path.is_dir():
        raise DataError(f"{what} not found: {path} (expected a folder)")
    if not folder and not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


def _classes_for(labels: np.ndarray, classes: Sequence[str] | None, where: Path | str) -> list[str]:
    """Class names: the given list (checked against the labels) or '0'..'K-1'."""
    top = int(labels.max()) + 1 if len(labels) else 0
    if classes is None:
        return [str(i) for i in range(top)]
    classes = [str(c) for c in classes]
    if top > len(classes):
        raise DataError(f"{where}: label {top - 1} has no name ({len(classes)} classes given)")
    return classes


def to_uint8(images: np.ndarray, where: Path | str) -> np.ndarray:
    """uint8 images from any numeric array: floats in 0..1 are scaled by 255."""
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "iuf" and images.dtype != bool:
        raise DataError(f"{where}: images must be numeric, got dtype {images.dtype}")
    values = images.astype(np.float64)
    if values.size and not np.isfinite(values).all():
        raise DataError(f"{where}: images contain NaN or infinite values")
    if images.dtype.kind == "f" and values.size and values.max() <= 1.0:
        values = values * 255.0
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(f"{where}: pixel values must lie in 0..255 (or 0..1 for floats), "
                        f"found {values.min():g}..{values.max():g}")
    return np.rint(values).astype(np.uint8)


def check_image_shape(images: np.ndarray, where: Path | str) -> None:
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        return
    if images.ndim == 3:
        return
    raise DataError(f"{where}: images must have shape (N, H, W) or (N, H, W, C) with C in 1, 3, 4; "
                    f"got {images.shape}")


# --------------------------------------------------------------------------- digits


def load_digits_source() -> ImageSource:
    """scikit-learn's bundled 8x8 digits (1,797 images), pixel counts 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits  # heavy: scikit-learn, for this kind only (no torch-free layer needs it)

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSource(classes=[str(c) for c in bunch.target_names], labels=bunch.target,
                       images=images)



# --------------------------------------------------------------------------- npz


def load_npz_source(path: PathLike | None = None, images_key: str = "images",
                    labels_key: str = "labels", classes: Sequence[str] | None = None) -> ImageSource:
    """Two arrays of an ``.npz`` file (read without pickle).

    Options:
        path: the ``.npz`` file.
        images_key: array of shape (N, H, W) or (N, H, W, C); uint8, or any numeric
            type with values in 0..255 (floats in 0..1 are scaled by 255).
        labels_key: array of N labels: integers 0..K-1, or strings (classes are then
            the sorted distinct strings).
        classes: names of the integer labels (default '0'..'K-1').
    """
    file = _existing(path, "npz file", "npz", folder=False)
    try:
        with np.load(file, allow_pickle=False) as archive:
            present = list(archive.files)
            for key in (images_key, labels_key):
                if key not in present:
                    raise DataError(f"{file}: no array named '{key}'; the file holds "
                                    f"{', '.join(present) or 'no arrays'}")
            images, labels = archive[images_key], archive[labels_key]
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{file}: cannot read as .npz without pickle ({err})") from None
    check_image_shape(images, f"{file}['{images_key}']")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{file}: '{labels_key}' must have one label per image "
                        f"({len(images)}), got shape {labels.shape}")
    if labels.dtype.kind in "US":
        names, labels = np.unique(labels, return_inverse=True)
        classes = classes if classes is not None else [str(n) for n in names]
    elif labels.dtype.kind not in "iu":
        raise DataError(f"{file}: '{labels_key}' must hold integers or strings, got {labels.dtype}")
    elif len(labels) and labels.min() < 0:
        raise DataError(f"{file}: '{labels_key}' holds negative labels")
    labels = labels.astype(np.int64)
    images = to_uint8(images, f"{file}['{images_key}']")
    return ImageSource(classes=_classes_for(labels, classes, file), labels=labels, images=images)


def load_folder_source(path: PathLike | None = None, on_bad: Literal["error", "skip"] = "error",
                       verify: Literal["full", "header", "none"] = "full",
                       classes: Sequence[str] | None = None) -> ImageSource:
    """A folder with one sub-folder of images per class (PNG, JPEG, PGM, BMP, ...).

    Class folders and the image files inside each (searched recursively) are in
    natural order ('s2' before 's10'); hidden entries and files with other suffixes
    are ignored. Images are read lazily; grayscale and RGB may be mixed (the
    transform converts channels).

    Options:
        path: the folder.
        on_bad: ``"error"`` (default) stops at the first unreadable image or empty class
            folder with a DataError naming it; ``"skip"`` leaves them out and counts
            them in `ImageSource.skipped` (``unreadable``, ``empty_class``).
        verify: ``"full"`` (default) decodes every image once while listing, so a
            corrupt or truncated file can never stop training midway; ``"header"``
            only checks headers (fast for very large folders; a file damaged beyond
            its header then fails when read, with its name); ``"none"`` checks nothing.
        classes: use only these class folders, in this order.
    """
    root = _existing(path, "image folder", "folder", folder=True)
    if on_bad not in ("error", "skip"):
        raise ConfigError(f"folder: on_bad must be 'error' or 'skip', got {on_bad!r}")
    if verify not in ("full", "header", "none"):
        raise ConfigError(f"folder: verify must be 'full', 'header' or 'none', got {verify!r}")
    found = sorted((d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                   key=_natural_key)
    odd = [name for name in found if name != name.strip() or any(c in name for c in "\n\r")]
    if odd:  # classes.txt holds one stripped name per line: such a name would shift every label after it
        raise DataError(f"{root}: class folder {odd[0]!r} has a line break or surrounding spaces; a class name is "
                        "one line of text: rename the folder")
    if classes is not None:
        missing = [c for c in classes if c not in found]
        if missing:
            raise DataError(f"{root}: no class folder {', '.join(map(repr, missing))}")
        found = [str(c) for c in classes]
    if not found:
        raise DataError(f"{root}: no class sub-folders (expected one folder of images per class)")
    listing: list[tuple[str, list[Path]]] = []
    for name in found:
        files = sorted((f for f in (root / name).rglob("*")
                        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                        and not any(p.startswith(".") for p in f.relative_to(root).parts)),
                       key=lambda f: _natural_key(f.relative_to(root).as_posix()))
        listing.append((name, files))
    skipped = {"unreadable": 0, "empty_class": 0}
    kept_classes: list[str] = []
    kept_files: list[Path] = []
    labels: list[int] = []
    total = sum(len(files) for _, files in listing)
    bar = progress(desc="verify images", total=total, unit="img", leave=False,
                   disable=True if verify == "none" else None)
    with bar:
        for name, files in listing:
            good = []
            for file in files:
                if verify != "none":
                    try:
                        verify_image(file, verify)
                    except DataError:
                        if on_bad == "error":
                            raise
                        skipped["unreadable"] += 1
                        continue
                    finally:
                        bar.update(1)
                good.append(file)
            if not good:
                if on_bad == "error":
                    raise DataError(f"class folder {root / name} holds no readable images "
                                    "(remove it, or set on_bad = \"skip\")")
                skipped["empty_class"] += 1
                continue
            labels.extend([len(kept_classes)] * len(good))
            kept_classes.append(name)
            kept_files.extend(good)
    if not kept_files:
        raise DataError(f"{root}: no readable images in any class folder")
    return ImageSource(classes=kept_classes, labels=np.asarray(labels, dtype=np.int64),
                       files=kept_files, skipped={k: v for k, v in skipped.items() if v})


# --------------------------------------------------------------------------- bitmap

BITMAP_PREFIX = "full_numpy_bitmap_"


def load_bitmap_source(path: PathLike | None = None, max_per_class: int | None = None,
                       classes: Sequence[str] | None = None) -> ImageSource:
    """Google's Quick, Draw! 28x28 bitmaps: ``full_numpy_bitmap_<word>.npy`` files.

    Each file holds an (N, 784) uint8 array; its class name is the word in the file
    name (spaces kept). Without any such file, plain ``<word>.npy`` files (the names
    in Google's bucket) are read instead. Images come out as (N, 28, 28), ink 255 on 0.

    Options:
        path: the folder of ``.npy`` files.
        max_per_class: keep the first so many drawings of each word (the files are
            memory-mapped, so only those are read).
        classes: use only these words, in this order (default: every file, sorted).
    """
    root = _existing(path, "bitmap folder", "bitmap", folder=True)
    if max_per_class is not None and max_per_class < 1:
        raise ConfigError(f"bitmap: max_per_class must be >= 1, got {max_per_class}")
    by_word = {f.name[len(BITMAP_PREFIX):-4]: f for f in root.glob(BITMAP_PREFIX + "*.npy")}
    if not by_word:  # Google's bucket names the same files plainly '<word>.npy'
        by_word = {f.stem: f for f in root.glob("*.npy")}
    if not by_word:
        raise DataError(f"{root}: no {BITMAP_PREFIX}<word>.npy (or <word>.npy) files")
    words = sorted(by_word) if classes is None else [str(c) for c in classes]
    missing = [w for w in words if w not in by_word]
    if missing:
        raise DataError(f"{root}: no {BITMAP_PREFIX}<word>.npy for {', '.join(map(repr, missing))}")
    images, labels = [], []
    for label, word in enumerate(words):
        file = by_word[word]
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"cannot read {file}: {err}") from None
        if array.ndim != 2 or array.shape[1] != 784 or array.dtype != np.uint8:
            raise DataError(f"{file}: expected a uint8 array of shape (N, 784), got "
                            f"{array.dtype} {array.shape}")
        array = np.array(array[:max_per_class]).reshape(-1, 28, 28)
        images.append(array)
        labels.append(np.full(len(array), label, dtype=np.int64))
    return ImageSource(classes=words, labels=np.concatenate(labels), images=np.concatenate(images))


# --------------------------------------------------------------------------- csv


def _read_csv_rows(file: Path, header: bool | Literal["auto"], delimiter: str,
                   ) -> tuple[np.ndarray, list[str], int]:
    """Feature matrix, class column and the line number of the first data row."""
    try:
        with file.open(newline="") as handle:
            rows = [(n, row) for n, row in enumerate(csv.reader(handle, delimiter=delimiter), 1)
                    if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {file}: {err}") from None
    if not rows:
        raise DataError(f"{file}: no rows")
    if header == "auto":
        try:
            [float(cell) for cell in rows[0][1][:-1]]
            header = False
        except ValueError:
            header = True
    if header:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{file}: no data rows after the header")
    width = len(rows[0][1])
    if width < 2:
        raise DataError(f"{file}:{rows[0][0]}: need features then the class, found {width} column")
    features = np.empty((len(rows), width - 1), dtype=np.float64)
    targets = []
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{file}:{line}: {len(row)} columns, expected {width} like the first row")
        try:
            features[i] = [float(cell) for cell in row[:-1]]
        except ValueError:
            raise DataError(f"{file}:{line}: non-numeric feature value in {row[:-1]!r:.80}") from None
        targets.append(row[-1].strip())
    return features, targets, rows[0][0]


def _csv_labels(targets: list[str], classes: Sequence[str] | None, where: Path,
                ) -> tuple[np.ndarray, list[str]]:
    """Labels from the class column: non-negative integers index `classes` when given
    (else the distinct values, sorted, are the classes); strings are looked up by name."""
    try:
        numbers = [float(t) for t in targets]
        integers = all(n.is_integer() and n >= 0 for n in numbers)
    except ValueError:
        integers = False
    if integers:
        values = np.asarray(numbers, dtype=np.int64)
        if classes is not None:
            return values, [str(c) for c in classes]
        distinct, labels = np.unique(values, return_inverse=True)
        return labels.astype(np.int64), [str(v) for v in distinct]
    if classes is None:
        distinct, labels = np.unique(np.asarray(targets), return_inverse=True)
        return labels.astype(np.int64), [str(v) for v in distinct]
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted(set(targets) - set(index))
    if unknown:
        raise DataError(f"{where}: class values {unknown[:5]} are not among the given classes")
    return np.asarray([index[t] for t in targets], dtype=np.int64), list(index)


def load_csv_source(path: PathLike | None = None, test_path: PathLike | None = None,
                    shape: Sequence[int] | None = None, header: bool | Literal["auto"] = "auto",
                    scale: float | None = None, delimiter: str = ",",
                    classes: Sequence[str] | None = None) -> ImageSource:
    """CSV rows of pixel values followed by the class (UCI optdigits / pendigits style).

    Options:
        path: the training file.
        test_path: an optional official test file in the same layout; its rows are
            appended and marked in `test_mask`.
        shape: image shape [H, W] (or [H, W, C]); default: square, from the number
            of features.
        header: whether the first row is a header; ``"auto"`` (default) detects a
            non-numeric first row, per file.
        scale: the value mapped to 255 (16 for optdigits); default: the largest value
            in the data.
        delimiter: the field separator.
        classes: class names in label order; default: the distinct class values,
            sorted numerically when they are numbers.
    """
    files = [_existing(path, "CSV file", "csv", folder=False)]
    if test_path is not None:
        files.append(_existing(test_path, "CSV test file", "csv", folder=False))
    parts = [_read_csv_rows(f, header, delimiter) for f in files]
    widths = {p[0].shape[1] for p in parts}
    if len(widths) > 1:
        raise DataError(f"{files[0]} and {files[1]} have different numbers of columns")
    n_features = widths.pop()
    if shape is None:
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ConfigError(f"{files[0]}: {n_features} features do not form a square image; "
                              "set data.shape, e.g. [H, W]")
        shape = (side, side)
    shape = tuple(int(s) for s in shape)
    if math.prod(shape) != n_features:
        raise ConfigError(f"{files[0]}: shape {list(shape)} needs {math.prod(shape)} features, "
                          f"the rows have {n_features}")
    features = np.concatenate([p[0] for p in parts])
    targets = [t for p in parts for t in p[1]]
    top = float(scale) if scale is not None else float(features.max())
    if top <= 0:
        raise ConfigError(f"csv: scale must be > 0, got {top:g}")
    if features.min() < 0:
        raise DataError(f"{files[0]}: negative pixel values; nnlab expects 0..scale")
    images = np.rint(np.clip(features / top, 0.0, 1.0) * 255.0).astype(np.uint8)
    labels, classes = _csv_labels(targets, classes, files[0])
    test_mask = None
    if len(parts) > 1:
        test_mask = np.arange(len(labels)) >= len(parts[0][1])
    return ImageSource(classes=_classes_for(labels, classes, files[0]), labels=labels,
                       images=images.reshape((len(labels), *shape)), test_mask=test_mask)
