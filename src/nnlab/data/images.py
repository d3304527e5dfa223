"""Image data sets: a registry of loaders, per-split transforms and a torch Dataset.

A loader turns files (or scikit-learn's bundled digits) into an `ImageSource`: class
names, integer labels and either every image in memory (uint8) or one file per sample,
read lazily. Splitting happens elsewhere (`nnlab.data.splits`); each split then builds
its own `ImageDataset` with its own transform, so no split can change another's.

Kinds (`load_source(kind, **options)`):

- ``digits``: scikit-learn's 8x8 digits, no options.
- ``idx``: MNIST / Fashion-MNIST IDX files in a folder, optionally downloaded.
- ``npz``: two arrays of an ``.npz`` file.
- ``folder``: one sub-folder of image files per class.
- ``bitmap``: Google's Quick, Draw! ``full_numpy_bitmap_<word>.npy`` files.
- ``csv``: rows of pixel values then the class (UCI optdigits style).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import inspect
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.utils.data
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from nnlab.errors import ConfigError, DataError
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
        raise ConfigError(f"data kind '{kind}' needs a `path` ({what})")
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


def _to_uint8(images: np.ndarray, where: Path | str) -> np.ndarray:
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


def _check_image_shape(images: np.ndarray, where: Path | str) -> None:
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        return
    if images.ndim == 3:
        return
    raise DataError(f"{where}: images must have shape (N, H, W) or (N, H, W, C) with C in 1, 3, 4; "
                    f"got {images.shape}")


# --------------------------------------------------------------------------- digits


def load_digits_source() -> ImageSource:
    """scikit-learn's bundled 8x8 digits (1,797 images), pixel counts 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSource(classes=[str(c) for c in bunch.target_names], labels=bunch.target,
                       images=images)


# --------------------------------------------------------------------------- idx

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]

# The official files and their md5 sums (the ones torchvision checks). MNIST from the
# S3 mirror torchvision uses (yann.lecun.com often refuses downloads); Fashion-MNIST
# from Zalando's own bucket named in its README.
IDX_DOWNLOADS: dict[str, dict[str, Any]] = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}
DOWNLOAD_TIMEOUT_S = 30.0


def read_idx(path: PathLike) -> np.ndarray:
    """One IDX file (gzipped or not, told apart by content) as a numpy array.

    Checks the magic number (two zero bytes, a known type code, the number of
    dimensions) and that the data length matches the dimensions; any problem is a
    DataError naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: not a readable gzip/IDX file ({err}); the file may be "
                        "truncated, download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}; "
                        "expected 0000 then a type code and the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: IDX file {state}: header gives shape {dims} "
                        f"({expected} bytes), the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    # Official names, gzipped or not, and the dotted variant some mirrors use.
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_idx(path: PathLike, dataset: str = "mnist") -> list[Path]:
    """Fetch the official IDX files of `dataset` into `path` (skipping those present).

    Each file is written to a temporary name, checked against its md5 sum and only
    then renamed, so an interrupted download never leaves a half file behind.
    Offline, or on any network error, raises one DataError telling where to put
    the files by hand.
    """
    if dataset not in IDX_DOWNLOADS:
        raise ConfigError(f"idx download: unknown dataset '{dataset}'; "
                          f"choose one of {', '.join(IDX_DOWNLOADS)}")
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    spec = IDX_DOWNLOADS[dataset]
    written = []
    for name, md5 in spec["files"].items():
        target = folder / name
        if _find_idx(folder, name.removesuffix(".gz")) is not None:
            continue
        url = spec["url"] + name
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                    tmp.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with progress(desc=f"download {name}", total=total, unit="B",
                              unit_scale=True, leave=False) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            tmp.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            raise DataError(f"could not download {url} ({reason}; offline?); place the files "
                            f"{', '.join(spec['files'])} in {folder}") from None
        if _md5(tmp) != md5:
            tmp.unlink(missing_ok=True)
            raise DataError(f"downloaded {url} but its md5 sum does not match {md5}; "
                            f"try again or place the files in {folder}")
        os.replace(tmp, target)
        written.append(target)
    return written


def load_idx_source(path: PathLike | None = None, download: bool = False,
                    dataset: Literal["mnist", "fashion-mnist"] | None = None,
                    classes: Sequence[str] | None = None) -> ImageSource:
    """MNIST-style IDX files from the folder `path`.

    Options:
        path: folder holding ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
            (each optionally ``.gz``) and optionally the ``t10k-...`` pair, which
            becomes the official test part (`test_mask`).
        download: fetch the official files of `dataset` into `path` first (files
            already there are kept).
        dataset: ``"mnist"`` (default when downloading) or ``"fashion-mnist"``; also
            chooses the class names (Fashion-MNIST's ten article names).
        classes: explicit class names, overriding the above.
    """
    if path is None:
        raise ConfigError("data kind 'idx' needs a `path` (the folder with the IDX files)")
    folder = Path(path).expanduser()
    if download:
        download_idx(folder, dataset or "mnist")
    if not folder.is_dir():
        raise DataError(f"IDX folder not found: {folder} (set download = true to fetch "
                        "MNIST or Fashion-MNIST there)")
    parts_images, parts_labels, parts_test = [], [], []
    for part, (image_stem, label_stem) in _IDX_PARTS.items():
        image_file, label_file = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
        if image_file is None and label_file is None and part == "t10k":
            continue
        if image_file is None or label_file is None:
            missing = image_stem if image_file is None else label_stem
            raise DataError(f"{folder}: missing {missing}[.gz] (download = true fetches "
                            "MNIST or Fashion-MNIST)")
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{image_file}: expected unsigned-byte images of 3 dimensions, got "
                            f"{images.dtype} of shape {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{label_file}: expected 1-dimensional integer labels, got "
                            f"{labels.dtype} of shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"{image_file} holds {len(images)} images but {label_file} "
                            f"holds {len(labels)} labels")
        parts_images.append(images)
        parts_labels.append(labels.astype(np.int64))
        parts_test.append(np.full(len(labels), part == "t10k"))
    labels = np.concatenate(parts_labels)
    if classes is None and dataset == "fashion-mnist":
        classes = FASHION_MNIST_CLASSES
    return ImageSource(classes=_classes_for(labels, classes, folder), labels=labels,
                       images=np.concatenate(parts_images),
                       test_mask=np.concatenate(parts_test) if len(parts_test) > 1 else None)


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
    _check_image_shape(images, f"{file}['{images_key}']")
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
    images = _to_uint8(images, f"{file}['{images_key}']")
    return ImageSource(classes=_classes_for(labels, classes, file), labels=labels, images=images)


# --------------------------------------------------------------------------- folder

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".pnm", ".bmp",
                            ".tif", ".tiff", ".webp", ".gif"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_PIL_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
               ValueError, EOFError)


def read_image(path: PathLike) -> np.ndarray:
    """One image file as uint8: (H, W) when grayscale, else (H, W, 3) RGB.

    16-bit grey is divided by 257 and float grey in 0..1 multiplied by 255; alpha
    is dropped. A missing, unreadable or truncated file is a DataError naming it.
    """
    try:
        with Image.open(path) as img:
            if img.mode in _WIDE_GRAY_MODES:
                values = np.asarray(img, dtype=np.float64)
                top = values.max(initial=0.0)
                if img.mode == "F" and top <= 1.0:
                    values = values * 255.0
                elif top > 255:
                    values = values / 257.0
                return np.rint(values).clip(0, 255).astype(np.uint8)
            img = img.convert("L" if img.mode in _GRAY_MODES else "RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err} (corrupt or truncated?)") from None


def _verify_image(path: Path, how: str) -> None:
    if how == "full":
        read_image(path)
        return
    try:
        with Image.open(path) as img:
            img.verify()
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err} (corrupt or truncated?)") from None


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
                        _verify_image(file, verify)
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


# --------------------------------------------------------------------------- registry

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


# --------------------------------------------------------------------------- transforms


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, channels, H, W): grey repeated to RGB, RGB to grey by
    luminance (ITU-R 601, as Pillow and torchvision do), alpha dropped."""
    if images.shape[1] in (2, 4):  # grey + alpha, RGB + alpha
        images = images[:, :-1]
    have = images.shape[1]
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        return v2.functional.rgb_to_grayscale(images, num_output_channels=1)
    if have != channels:
        raise DataError(f"cannot turn images of {have} channels into {channels}")
    return images


class ImageTransform:
    """One split's transform: uint8 image(s) -> normalised float tensor(s).

    Steps: convert to `channels` channels; resize to `image_size` x `image_size`
    (antialiased); when `augment` is on, a small random affine per image
    (torchvision.transforms.v2.RandomAffine: rotation up to 10 degrees, translation
    up to 10 %, scale 0.9 to 1.1, black fill); scale to 0..1; normalise with `mean`
    and `std`. Calling it transforms one image; `batch` does the same for a stack
    of images at once (what `ImageDataset.__getitems__` uses for in-memory sources).
    """

    def __init__(self, image_size: int, channels: int, augment: bool,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> None:
        if image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {image_size}")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}")
        means = [float(mean)] * channels if isinstance(mean, (int, float)) else [float(m) for m in mean]
        stds = [float(std)] * channels if isinstance(std, (int, float)) else [float(s) for s in std]
        if len(means) != channels or len(stds) != channels or min(stds) <= 0:
            raise ConfigError(f"mean and std need one value or {channels} values, and std > 0")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.augment = bool(augment)
        self.mean = tuple(means)
        self.std = tuple(stds)
        self._affine = (v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
                        if self.augment else None)
        # (x / 255 - mean) / std as one multiply and one subtract.
        self._mul = (1.0 / (255.0 * torch.tensor(stds))).view(1, -1, 1, 1)
        self._sub = (torch.tensor(means) / torch.tensor(stds)).view(1, -1, 1, 1)

    def __repr__(self) -> str:
        return (f"ImageTransform(image_size={self.image_size}, channels={self.channels}, "
                f"augment={self.augment}, mean={self.mean}, std={self.std})")

    def __call__(self, image: Any) -> torch.Tensor:
        """One PIL image or uint8 array (H, W) / (H, W, C) -> (channels, size, size) float."""
        return self._apply(v2.functional.to_image(image).as_subclass(torch.Tensor)[None])[0]

    def batch(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W) or (N, H, W, C) -> (N, channels, size, size) float."""
        images = torch.as_tensor(images)
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return self._apply(images)

    def _apply(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise DataError(f"images must be uint8, got {images.dtype}")
        images = _to_channels(images, self.channels)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = v2.functional.resize(images.contiguous(), [self.image_size, self.image_size],
                                          antialias=True)
        if self._affine is not None:
            # One random draw per image (the transform on a stack would share one).
            images = torch.stack([self._affine(image) for image in images])
        return images.float().mul_(self._mul).sub_(self._sub)


def make_transform(train: bool, image_size: int, channels: int, augment: bool,
                   mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                   ) -> ImageTransform:
    """The transform of one split: uint8 image (PIL or (H, W[, C]) array) -> float tensor.

    Returns an `ImageTransform` giving (channels, image_size, image_size) tensors:
    grey repeated to 3 channels when `channels == 3`, colour turned grey when
    `channels == 1`, resized, augmented (small random affine) only when both `train`
    and `augment` are true, then normalised with `mean` and `std`.
    """
    return ImageTransform(image_size, channels, augment=train and augment, mean=mean, std=std)


# --------------------------------------------------------------------------- dataset


class ImageDataset(torch.utils.data.Dataset):
    """The samples `indices` of a source, each passed through this dataset's transform.

    Every split builds its own ImageDataset with its own transform; the transform is
    fixed at construction (a read-only attribute) and the shared `ImageSource` holds
    none, so making the validation set can never change what the training set does
    (the notebook this replaces set its validation transform on a dataset object
    shared by both splits).
    """

    def __init__(self, source: ImageSource, indices: np.ndarray, transform: Callable) -> None:
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError("indices must be a 1-D integer array")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(source)):
            raise ValueError(f"indices must lie in 0..{len(source) - 1}")
        self._source = source
        self._indices = indices
        self._indices.setflags(write=False)
        self._transform = transform

    @property
    def source(self) -> ImageSource:
        """The (shared, transform-free) source of the samples."""
        return self._source

    @property
    def indices(self) -> np.ndarray:
        """Indices of this dataset's samples in the source (read-only)."""
        return self._indices

    @property
    def transform(self) -> Callable:
        """This dataset's own transform; read-only, so no other split can replace it."""
        return self._transform

    @property
    def labels(self) -> np.ndarray:
        """Labels of this dataset's samples, in order."""
        return self._source.labels[self._indices]

    @property
    def classes(self) -> list[str]:
        """Class names of the source (index = label)."""
        return self._source.classes

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self._indices[i])
        return self._transform(self._source.image(index)), int(self._source.labels[index])

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch at once (torch's DataLoader calls this when it exists).

        In-memory sources with an `ImageTransform` are transformed as one stack,
        much faster than image by image; anything else falls back to `__getitem__`.
        """
        batch = getattr(self._transform, "batch", None)
        if batch is None or self._source.images is None or not len(positions):
            return [self[i] for i in positions]
        index = self._indices[np.asarray(positions, dtype=np.int64)]
        tensors = batch(self._source.images[index])
        return list(zip(tensors.unbind(0), self._source.labels[index].tolist()))
