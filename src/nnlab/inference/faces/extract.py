"""`nnlab faces detect`: the faces of photos written out, as crops to train or enrol on.

    summary = write_faces(["photos/"], "faces/", size=(112, 112))

The folder holds ``faces.json`` (the detector's settings, the crop size, every photo with its number
of faces, and the photos skipped with the reason), and per photo ``detections/<name>.json`` (its size,
and each face's box, five landmarks and score, in the photo's pixels), ``crops/<name>_<k>.png`` (the
aligned crops, k = 0 the largest face) and ``previews/<name>.jpg`` (the photo at most 1024 px a side
with every box and landmark drawn). For a folder of identity sub-folders `<name>` is
`<person>/<photo>`, so that ``crops/`` is itself a folder of people to train on (data.kind = "folder")
or to enrol (nnlab gallery build); there a photo showing several faces is skipped (which one is the
person is not guessed), as enrolling does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from nnlab.errors import DataError
from nnlab.fileio import OutputKind, staged_output_dir
from nnlab.inference.faces.align import align_face
from nnlab.inference.faces.detect import Face, FaceDetector, default_detector
from nnlab.inference.faces.embed import list_images
from nnlab.inference.models.image import MAX_PIXELS
from nnlab.ingest.image_files import read_image
from nnlab.progress import progress

FACES_FOLDER = OutputKind("faces folder", "faces.json",
                          frozenset({"faces.json", "detections", "crops", "previews"}))
PREVIEW_SIDE = 1024


def preview(image: np.ndarray, faces: Sequence[Face], labels: Sequence[str] | None = None) -> np.ndarray:
    """An RGB copy of the photo (at most PREVIEW_SIDE px a side) with every box, its number (or label)
    and the five landmarks drawn."""
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()
    scale = min(1.0, PREVIEW_SIDE / max(rgb.shape[:2]))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    for k, face in enumerate(faces):
        x0, y0, x1, y1 = (round(v * scale) for v in face.box)
        cv2.rectangle(rgb, (x0, y0), (x1, y1), (0, 220, 0), thick)
        for x, y in face.landmarks * scale:
            cv2.circle(rgb, (round(x), round(y)), thick + 1, (255, 60, 0), -1)
        text = labels[k] if labels is not None else str(k)
        cv2.putText(rgb, text, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick + 0.2, (0, 220, 0), thick)
    return rgb


def _names(paths: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """A unique relative name per photo: <person>/<stem> for identity folders, else the stem (-2, -3 ...
    added when two photos share one)."""
    seen: dict[str, int] = {}
    out = []
    for i, p in enumerate(paths):
        base = f"{labels[i]}/{p.stem}" if labels is not None else p.stem
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def write_faces(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, size: tuple[int, int] = (112, 112),
                detector: FaceDetector | None = None, overwrite: bool = False,
                skip: Callable[[Path, str], None] | None = None) -> dict[str, Any]:
    """Detect and align every face of the photos `inputs` names (files, folders, or a folder of identity
    sub-folders) into the folder `out` (module docstring); returns faces.json's content. A photo that
    cannot be read or shows no face is reported to `skip(path, reason)` and listed in faces.json; when
    no photo has a face at all, nothing is written and the DataError says why."""
    detector = detector or default_detector()
    files = list_images(inputs)
    names = _names(files.paths, files.labels)
    photos, skipped = [], []
    with staged_output_dir(Path(out), FACES_FOLDER, overwrite) as tmp:
        with progress(desc="faces", total=len(files.paths), unit="photo") as bar:
            for path, name in zip(files.paths, names, strict=True):
                bar.update(1)
                try:
                    image = read_image(path, max_pixels=MAX_PIXELS)
                    faces = detector.detect(image)
                except DataError as exc:
                    skipped.append({"path": str(path), "reason": str(exc)})
                    continue
                if not faces or (files.labels is not None and len(faces) > 1):
                    skipped.append({"path": str(path), "reason": "no face found" if not faces else
                                    f"{len(faces)} faces in a folder of one person (nothing is guessed)"})
                    continue
                photos.append(_write_photo(tmp, name, path, image, faces, size))
        if not photos:  # one line: the reason of the only photo, or of the first
            path, reason = skipped[0]["path"], skipped[0]["reason"]
            first = reason if path in reason else f"{path}: {reason}"
            raise DataError(first if len(skipped) == 1 else
                            f"no face found in any of the {len(skipped)} photos (the first, {first})")
        for entry in skipped:
            if skip is not None:
                skip(Path(entry["path"]), entry["reason"])
        summary = {"format": "nnlab-faces", "format_version": 1, **detector.settings(), "crop_size": list(size),
                   "photos": photos, "skipped": skipped, "faces": sum(p["faces"] for p in photos)}
        (tmp / "faces.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _write_photo(root: Path, name: str, path: Path, image: np.ndarray, faces: list[Face],
                 size: tuple[int, int]) -> dict[str, Any]:
    crops = []
    for k, face in enumerate(faces):
        crop = root / "crops" / f"{name}_{k}.png"
        crop.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(align_face(image, face.landmarks, size)).save(crop)
        crops.append(str(crop.relative_to(root)))
    record = {"path": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
              "faces": [{**f.to_json(), "crop": c} for f, c in zip(faces, crops, strict=True)]}
    det = root / "detections" / f"{name}.json"
    det.parent.mkdir(parents=True, exist_ok=True)
    det.write_text(json.dumps(record, indent=1) + "\n")
    prev = root / "previews" / f"{name}.jpg"
    prev.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(preview(image, faces)).save(prev, quality=90)
    return {"path": str(path), "faces": len(faces), "detections": str(det.relative_to(root)),
            "preview": str(prev.relative_to(root)), "crops": crops}
