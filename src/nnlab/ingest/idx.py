"""MNIST-style IDX files: reading, downloading the official files (md5-checked), and the `idx` kind."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nnlab.errors import ConfigError, DataError
from nnlab.fileio import GZIP_MAGIC
from nnlab.ingest.images import ImageSource, _classes_for
from nnlab.progress import progress

PathLike = str | os.PathLike

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
        if raw[:2] == GZIP_MAGIC:
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
        raise ConfigError("data.path: data kind 'idx' needs a path (the folder with the IDX files)")
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
