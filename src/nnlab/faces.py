"""Faces from Python: detect and align every face of a photo, enrol people from their photos, and
identify every face of a new photo (the functions the `nnlab faces detect`, `gallery` and `identify`
commands call).

    import nnlab
    faces = nnlab.faces.detect("party.jpg")               # [Face(box, landmarks, score)], largest first
    crops = nnlab.faces.align("party.jpg", faces)          # aligned 112 x 112 crops (uint8)
    model = nnlab.faces.load_model("runs/faces")           # a run or an export of an embedding model
    gallery = nnlab.faces.build_gallery(model, "people/")  # people/<name>/*.jpg, one face per photo
    for m in gallery.identify("party.jpg", model=model):   # every face: box, name or "unknown"
        print(m.face.box, m.identity, round(m.similarity, 3))
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from nnlab.inference.faces.align import TEMPLATE_112, align_face, similarity_transform, template
from nnlab.inference.faces.detect import Face, FaceDetector, default_detector
from nnlab.inference.faces.extract import preview, write_faces
from nnlab.inference.faces.gallery import UNKNOWN, Gallery, Match, build_gallery
from nnlab.inference.models.image import MAX_PIXELS, ImageModel, load_image_model
from nnlab.ingest.image_files import read_image

__all__ = ["TEMPLATE_112", "UNKNOWN", "Face", "FaceDetector", "Gallery", "ImageModel", "Match", "align",
           "align_face", "build_gallery", "detect", "load_model", "preview", "similarity_transform", "template",
           "write_faces"]

load_model = load_image_model

Photo = str | os.PathLike | np.ndarray


def _image(photo: Photo) -> np.ndarray:
    return photo if isinstance(photo, np.ndarray) else read_image(photo, max_pixels=MAX_PIXELS)


def detect(photo: Photo, detector: FaceDetector | None = None) -> list[Face]:
    """Every face of a photo (a path or a uint8 image), largest first, with the default detector."""
    return (detector or default_detector()).detect(_image(photo))


def align(photo: Photo, faces: Sequence[Face] | None = None, size: tuple[int, int] = (112, 112),
          detector: FaceDetector | None = None) -> list[np.ndarray]:
    """The aligned crops (`size` = (width, height)) of `faces` of a photo, detected when not given."""
    image = _image(photo)
    found = detect(image, detector) if faces is None else faces
    return [align_face(image, f.landmarks, size) for f in found]
