"""Face detection on the shared photos: time per megapixel and per face, on 2 torch threads.

Every photo of ../shared/data/faces/photos (7 photos, 626 to 2204 px a side, 10 faces) goes through
`nnlab.inference.faces.detect.FaceDetector` with its defaults (working size at most 1024 px a side),
once to warm up, then --repeat rounds; a photo's time is the median of its rounds. Figures: the total
of those times divided by the photos' megapixels (as read, before the working-size reduction) and by
the faces found, the slowest photo, and the alignment of one face (similarity + warp) for scale.

Run (quiet machine; about 10 s):
    .venv/bin/python benchmarks/faces_photos.py
    .venv/bin/python benchmarks/faces_photos.py --repeat 1 --photos 2      # a smoke run
Ends with ``RESULT faces_detect_ms_per_megapixel``, ``RESULT faces_detect_ms_per_face``,
``RESULT faces_detect_slowest_photo_ms``, ``RESULT faces_found`` and ``RESULT faces_align_ms``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from nnlab.inference.faces.align import align_face
from nnlab.inference.faces.detect import FaceDetector
from nnlab.inference.faces.embed import list_images
from nnlab.ingest.image_files import read_image

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "photos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos-dir", type=Path, default=PHOTOS)
    parser.add_argument("--photos", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(list_images([args.photos_dir / "enrol"]).paths + list_images([args.photos_dir / "query"]).paths)
    paths = paths[:args.photos] if args.photos else paths
    detector = FaceDetector()
    images = [read_image(p) for p in paths]
    detector.detect(images[0])  # warm-up: the first call pays torch's one-off costs
    times, faces = [], 0
    for path, image in zip(paths, images, strict=True):
        rounds = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            found = detector.detect(image)
            rounds.append(time.perf_counter() - t)
        faces += len(found)
        times.append(statistics.median(rounds))
        print(f"{path.parent.name}/{path.name}: {image.shape[1]} x {image.shape[0]}, {len(found)} faces, "
              f"{1000 * times[-1]:.0f} ms")
    megapixels = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    t = time.perf_counter()
    for _ in range(20):
        align_face(images[-1], found[0].landmarks if found else detector.detect(images[-1])[0].landmarks, (112, 112))
    align_ms = (time.perf_counter() - t) / 20 * 1000
    total_ms = 1000 * sum(times)
    print(f"{len(paths)} photos, {megapixels:.1f} megapixels, {faces} faces, {args.threads} threads")
    print(f"RESULT faces_detect_ms_per_megapixel {total_ms / megapixels:.1f}")
    print(f"RESULT faces_detect_ms_per_face {total_ms / max(faces, 1):.1f}")
    print(f"RESULT faces_detect_slowest_photo_ms {1000 * max(times):.0f}")
    print(f"RESULT faces_found {faces}")
    print(f"RESULT faces_align_ms {align_ms:.2f}")


if __name__ == "__main__":
    main()
