"""Faces in photographs: MTCNN boxes, five landmarks and scores, offline (facenet-pytorch's weights
ship inside its wheel), and the aligned crops a face model reads.

    detector = FaceDetector()                         # the defaults below; one per process is enough
    faces = detector.detect(image)                     # [Face(box, landmarks, score)], original pixels
    crops = [align_face(image, f.landmarks, (112, 112)) for f in faces]

A photo is detected at a working size (its longer side at most `max_side`, 1024 by default; boxes and
landmarks are mapped back to the photo's pixels), which bounds the time and memory of any photo:
MTCNN's image pyramid on a 2204 px photo costs four times as much for the same faces.

The defaults were chosen on the enrolment photos of ``../shared/data/faces/photos/enrol`` only: with
MTCNN's own stage thresholds (0.6, 0.7, 0.7) lowered to 0.5 a false face scores 0.93 there, and every
real face 0.9999 or more; the last stage's threshold is therefore 0.95.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from nnlab.errors import NnlabError

MAX_SIDE = 1024
MIN_FACE_SIZE = 20            # pixels at the working size (MTCNN's own default)
THRESHOLDS = (0.6, 0.7, 0.95)  # P-Net, R-Net, O-Net
_MIN_SIDE = 12                 # P-Net's window: a smaller image holds no face it can find


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1), landmarks (5, 2) as (x, y) (left eye, right eye, nose,
    left and right mouth corners, as seen in the image), both in the photo's pixels, and MTCNN's score."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"box": [round(v, 2) for v in self.box], "score": round(self.score, 6),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}

    @property
    def size(self) -> float:
        """The box's longer side, in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def _mtcnn_class() -> Any:
    try:
        from facenet_pytorch import MTCNN  # optional heavy dependency: only face detection needs it
    except ImportError:
        raise NnlabError("face detection needs facenet-pytorch: pip install 'nnlab[faces]'") from None
    return MTCNN


class FaceDetector:
    """MTCNN on the CPU (or `device`), with the defaults of the module docstring; thread-safe (one lock:
    MTCNN's networks are not re-entrant), so one instance serves every request of a server."""

    def __init__(self, max_side: int = MAX_SIDE, min_face_size: int = MIN_FACE_SIZE,
                 thresholds: tuple[float, float, float] = THRESHOLDS, device: str = "cpu") -> None:
        if max_side < _MIN_SIDE or min_face_size < _MIN_SIDE // 2:
            raise NnlabError(f"max_side {max_side} and min_face_size {min_face_size}: "
                             f"at least {_MIN_SIDE} and {_MIN_SIDE // 2} pixels")
        if not all(0.0 < t < 1.0 for t in thresholds) or len(thresholds) != 3:
            raise NnlabError(f"thresholds {thresholds}: three scores between 0 and 1")
        self.max_side, self.min_face_size, self.thresholds = int(max_side), int(min_face_size), tuple(thresholds)
        self._net = _mtcnn_class()(keep_all=True, device=device, min_face_size=self.min_face_size,
                                   thresholds=list(self.thresholds), post_process=False)
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        return {"detector": "mtcnn (facenet-pytorch)", "max_side": self.max_side,
                "min_face_size": self.min_face_size, "thresholds": list(self.thresholds)}

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces of a uint8 image ((H, W) grey or (H, W, 3) RGB), largest first."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise NnlabError(f"an image of shape {image.shape} and dtype {image.dtype}: expected uint8 "
                             "(H, W) or (H, W, 3), as nnlab.ingest.image_files.read_image gives")
        h, w = image.shape[:2]
        if min(h, w) < _MIN_SIDE:
            return []
        work, scale = _working_copy(image, self.max_side)
        with self._lock, torch.inference_mode():
            try:
                boxes, scores, points = self._net.detect(work, landmarks=True)
            except ValueError as exc:  # facenet-pytorch's torch.cat of no candidate at any scale
                if "non-empty list" not in str(exc):
                    raise
                return []
        if boxes is None:
            return []
        # facenet-pytorch may answer object-dtype arrays: make them float
        boxes = np.asarray(np.stack([np.asarray(b, dtype=np.float64) for b in boxes])) / scale
        points = np.asarray(np.stack([np.asarray(p, dtype=np.float64) for p in points])) / scale
        scores = np.asarray([float(s) for s in scores])
        faces = [Face(tuple(float(v) for v in _clip_box(b, w, h)), p, float(s))
                 for b, p, s in zip(boxes, points, scores, strict=True)]
        return sorted(faces, key=lambda f: -f.size)


def _clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(box, 0, [width, height, width, height])


def _working_copy(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The RGB image MTCNN sees (the longer side at most `max_side`, area-averaged), and its scale."""
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        scale = rgb.shape[1] / w
    return np.ascontiguousarray(rgb), scale


_DEFAULT: FaceDetector | None = None
_DEFAULT_LOCK = threading.Lock()


def default_detector() -> FaceDetector:
    """One FaceDetector with the defaults, made on first use (loading MTCNN takes a moment)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = FaceDetector()
        return _DEFAULT
