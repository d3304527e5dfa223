"""Embeddings of image files with an embedding model, and the `.npz` file `nnlab embed` writes.

    files = list_images(["photos/"])           # images, a folder, or a folder of identity sub-folders
    emb = embed_files(model, files.paths)       # (N, D) unit vectors, in batches, with a progress bar
    save_embeddings("embeddings.npz", files, emb, model.fingerprint)

An embeddings file holds ``embeddings`` (float32, N x D), ``paths`` and ``labels`` (strings; a
label is "" when unknown), ``fingerprint`` (the model's) and, when faces were detected in photos,
``boxes`` (float32 N x 4, x0 y0 x1 y1 in the photo's pixels; NaN for an image used whole, and a
photo's path repeated for each of its faces); no pickled objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.fileio import atomic_output, check_output_file
from nnlab.inference.models.image import BATCH, MAX_PIXELS, ImageModel
from nnlab.ingest.image_files import IMAGE_SUFFIXES, read_image
from nnlab.ingest.images import load_folder_source
from nnlab.progress import progress


@dataclass
class ImageFiles:
    """Image paths and, for a folder of identity sub-folders, each one's identity (else None)."""

    paths: list[Path]
    labels: list[str] | None = None


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(inputs: Sequence[str | os.PathLike]) -> ImageFiles:
    """The images `inputs` name: image files, folders of images, or one folder of identity
    sub-folders (labels = the sub-folder names, in natural order, as `data.kind = "folder"` reads them)."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise DataError("no input images given")
    if len(inputs) == 1 and inputs[0].is_dir() and not any(_is_image(p) for p in inputs[0].iterdir()):
        source = load_folder_source(inputs[0], verify="none")
        return ImageFiles(paths=list(source.files), labels=[source.classes[i] for i in source.labels])
    paths: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if _is_image(f))
            if not found:
                raise DataError(f"{p}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return ImageFiles(paths=paths)


def embed_files(model: ImageModel, paths: Sequence[Path], batch_size: int = BATCH,
                desc: str = "embed") -> np.ndarray:
    """(N, D) float32 unit vectors of image files, read and embedded `batch_size` at a time; an unreadable
    image, or one over MAX_PIXELS pixels, is a DataError naming it."""
    parts = []
    with progress(desc=desc, total=len(paths), unit="img") as bar:
        for lo in range(0, len(paths), batch_size):
            chunk = paths[lo:lo + batch_size]
            parts.append(model.embed([read_image(p, max_pixels=MAX_PIXELS) for p in chunk], batch_size))
            bar.update(len(chunk))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def save_embeddings(path: str | os.PathLike, files: ImageFiles, embeddings: np.ndarray, fingerprint: str,
                    boxes: np.ndarray | None = None) -> Path:
    """Write an embeddings file (see the module docstring); `.npz` is added to a name without it (as
    numpy would), and the path returned is the file written."""
    path = check_output_file(Path(path))
    if path.suffix != ".npz":
        path = check_output_file(path.with_name(path.name + ".npz"))
    labels = files.labels if files.labels is not None else [""] * len(files.paths)
    with atomic_output(path, "wb") as fh:
        np.savez(fh, embeddings=np.asarray(embeddings, dtype=np.float32),
                 paths=np.asarray([str(p) for p in files.paths], dtype=str), labels=np.asarray(labels, dtype=str),
                 fingerprint=np.asarray(fingerprint),
                 **({} if boxes is None else {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4)}))
    return path


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, ImageFiles, str]:
    """(embeddings, files with their labels or None, fingerprint) of an embeddings file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = [str(x) for x in z["labels"]]
            files = ImageFiles([Path(str(p)) for p in z["paths"]], labels if any(labels) else None)
            return z["embeddings"], files, str(z["fingerprint"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not an nnlab embeddings file ({exc})") from None
