"""Face alignment: a similarity transform from five landmarks onto the ArcFace template (NumPy + cv2).

    matrix = similarity_transform(face.landmarks, template(112, 112))   # 2 x 3, least squares (Umeyama)
    crop = align_face(image, face.landmarks, (112, 112))                 # uint8, grey or RGB as the image

The landmarks are (x, y) pixels in the order MTCNN gives them: left eye, right eye (as seen in the
image), nose, left and right mouth corners. The template is insightface's 112 x 112 one; for another
crop size it is scaled to the crop's height and centred horizontally, so a square crop of any size
frames the face exactly as insightface's 112 x 112 crop does.
"""

from __future__ import annotations

import cv2
import numpy as np

from nnlab.errors import DataError

#: the standard ArcFace 112 x 112 five-point template (insightface): eyes, nose tip, mouth corners
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def template(width: int, height: int) -> np.ndarray:
    """(5, 2) landmark positions of a `width` x `height` aligned crop: the 112 x 112 template scaled by
    height / 112 and centred horizontally."""
    if width < 1 or height < 1:
        raise DataError(f"an aligned crop of {width} x {height} pixels: both sides must be at least 1")
    s = height / 112.0
    out = TEMPLATE_112 * s
    out[:, 0] += width / 2.0 - 56.0 * s
    return out


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity (rotation, uniform scale, translation; no reflection) that maps the points
    `src` onto `dst` with the least squared error (Umeyama 1991, as skimage's SimilarityTransform)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise DataError(f"landmarks of shape {src.shape} and {dst.shape}: expected two (N, 2) arrays, N >= 2")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = (a ** 2).sum() / len(src)
    if not np.isfinite(var) or var < 1e-12:
        raise DataError("the landmarks coincide: no transform maps them onto the template")
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection fits better: take the best rotation instead
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var)
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """The face whose five landmarks are `landmarks`, warped onto the template of a `size` = (width, height)
    crop; uint8, grey or RGB as `image`. A face much larger than the crop is first halved with cv2.pyrDown
    as often as needed, so that the bilinear warp never skips pixels (no aliasing)."""
    width, height = size
    matrix = similarity_transform(landmarks, template(width, height))
    scale = float(np.hypot(*matrix[:, 0]))
    pts = np.asarray(landmarks, dtype=np.float64)
    while scale < 0.5 and min(image.shape[:2]) >= 4:
        image = cv2.pyrDown(image)
        pts, scale = pts / 2.0, scale * 2.0
    if pts is not landmarks:
        matrix = similarity_transform(pts, template(width, height))
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 2 x 3 affine matrix."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
