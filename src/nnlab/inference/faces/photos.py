"""Photographs where a face model expects face crops: every face of each photo detected, aligned onto
the ArcFace template at the model's input size, and kept with its box.

    items = face_items(paths, size=(64, 64))             # one FaceItem per face (or per crop), in order
    emb = model.embed([it.crop for it in items])

Which images are photos: with ``faces = "auto"`` (the default everywhere) an image whose longer side
is over CROP_MAX_SIDE pixels is a photo (detected), a smaller one a face crop (used whole, as the
ORL images a model trains on); ``"detect"`` and ``"crops"`` decide for every image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.errors import DataError, NnlabError
from nnlab.inference.faces.align import align_face
from nnlab.inference.faces.detect import Face, FaceDetector, default_detector
from nnlab.inference.models.image import BATCH, MAX_PIXELS, ImageModel
from nnlab.ingest.image_files import read_image
from nnlab.progress import progress

FACES_MODES = ("auto", "detect", "crops")
CROP_MAX_SIDE = 256  # auto: a larger image is a photo to detect faces in


@dataclass
class FaceItem:
    """One face to embed: the image it comes from, its face (None when the image is a crop used
    whole) and its number in the photo (largest first; -1 for a crop), the aligned crop, the label."""

    path: Path
    crop: np.ndarray | None
    face: Face | None = None
    index: int = -1
    label: str | None = None

    def box_text(self) -> str:
        return "" if self.face is None else " ".join(f"{v:.0f}" for v in self.face.box)


def check_mode(faces: str) -> str:
    if faces not in FACES_MODES:
        raise NnlabError(f"faces {faces!r}: one of {', '.join(FACES_MODES)}")
    return faces


def is_photo(image: np.ndarray, faces: str = "auto") -> bool:
    """Whether `image` is detected (a photo) or used whole (a crop), by `faces` (module docstring)."""
    check_mode(faces)
    return faces == "detect" or (faces == "auto" and max(image.shape[:2]) > CROP_MAX_SIDE)


def image_faces(image: np.ndarray, size: tuple[int, int], faces: str = "auto",
                detector: FaceDetector | None = None) -> list[tuple[np.ndarray, Face | None]]:
    """(aligned crop, face) of every face of a photo, largest first, or [(image, None)] for a crop."""
    if not is_photo(image, faces):
        return [(image, None)]
    found = (detector or default_detector()).detect(image)
    return [(align_face(image, f.landmarks, size), f) for f in found]


def face_items(paths: Sequence[Path], size: tuple[int, int], labels: Sequence[str] | None = None,
               faces: str = "auto", detector: FaceDetector | None = None, one_face: bool = False,
               skip: Callable[[Path, str], None] | None = None) -> list[FaceItem]:
    """The faces of image files, in order. A photo without a face (or, with `one_face`, with several) is
    handed to `skip(path, reason)` and left out; without `skip` it is a DataError. Unreadable images
    and images over MAX_PIXELS are DataErrors naming them."""
    items: list[FaceItem] = []
    for i, path in enumerate(paths):
        image = read_image(path, max_pixels=MAX_PIXELS)
        found = image_faces(image, size, faces, detector)
        label = None if labels is None else labels[i]
        reason = None
        if not found:
            reason = "no face found"
        elif one_face and len(found) > 1:
            reason = f"{len(found)} faces: a photo to enrol must show one face only (nothing is guessed)"
        if reason is not None:
            if skip is None:
                raise DataError(f"{path}: {reason}")
            skip(Path(path), reason)
            continue
        items += [FaceItem(Path(path), crop, face, k if face is not None else -1, label)
                  for k, (crop, face) in enumerate(found)]
    return items


def crop_size(model: ImageModel) -> tuple[int, int]:
    """The aligned crop a model reads: square, at its input size (its transform changes no pixel)."""
    return (model.prep.image_size, model.prep.image_size)


def embed_faces(model: ImageModel, paths: Sequence[Path], labels: Sequence[str] | None = None,
                faces: str = "auto", detector: FaceDetector | None = None, one_face: bool = False,
                skip: Callable[[Path, str], None] | None = None, batch_size: int = BATCH,
                desc: str = "embed") -> tuple[np.ndarray, list[FaceItem]]:
    """(N, D) embeddings of every face of image files (photos detected, crops whole: `face_items`), `batch_size`
    files at a time, and the FaceItem of each row (its crop dropped once embedded)."""
    check_mode(faces)
    size = crop_size(model)
    items: list[FaceItem] = []
    parts = []
    with progress(desc=desc, total=len(paths), unit="img") as bar:
        for lo in range(0, len(paths), batch_size):
            chunk = face_items(paths[lo:lo + batch_size], size, None if labels is None else labels[lo:lo + batch_size],
                               faces, detector, one_face, skip)
            if chunk:
                parts.append(model.embed([it.crop for it in chunk], batch_size))
            for it in chunk:
                it.crop = None  # embedded: keep the box, not the pixels
            items += chunk
            bar.update(min(batch_size, len(paths) - lo))
    emb = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    return emb, items


def boxes_of(items: Sequence[FaceItem]) -> np.ndarray | None:
    """(N, 4) boxes of the items (NaN for a crop used whole), or None when no item comes from a photo."""
    if all(it.face is None for it in items):
        return None
    return np.array([it.face.box if it.face is not None else [np.nan] * 4 for it in items], dtype=np.float32)
