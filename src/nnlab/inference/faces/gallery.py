"""A gallery of enrolled people, and identifying new images against it.

    gallery = build_gallery(model, "people/")         # one sub-folder of photos per person
    gallery.add(model, "newcomers/")                   # enrol more people (or more photos of someone)
    gallery.save("gallery/")                           # gallery/embeddings.npz + gallery/gallery.json
    gallery = Gallery.load("gallery/")
    matches = gallery.identify(model.embed(images), threshold=model.threshold(1e-3))
    matches = gallery.identify("photo.jpg", model=model)  # every face of a photo: m.face.box, m.identity

Photos are welcome wherever faces are (`nnlab.inference.faces.photos`): enrolling takes the one face
of each photo (a photo with none or several is skipped and reported, never guessed), identifying
answers for every face.

A gallery directory holds ``embeddings.npz`` (``embeddings`` float32 N x D, unit vectors, one per
enrolled image; ``labels`` int64, the identity of each; ``means`` float32 K x D, each identity's
L2-normalised mean embedding) and ``gallery.json`` (format, the identities, the enrolled image
paths, the model's name and fingerprint, the dimension). No pickled objects. A gallery only
accepts embeddings from the model whose fingerprint it holds.

Identification is nearest-neighbour: an identity's similarity to a query is its best enrolled
image's cosine (the same image-to-image score the run's verification ROC thresholds), so the
threshold of `nnlab identify` means what it meant at training time. Below it, the answer is
``unknown``. The search is exact NumPy for small galleries and faiss above a size
(`nnlab.inference.faces.search.make_index`).
"""

from __future__ import annotations

import csv
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.errors import DataError, NnlabError
from nnlab.fileio import (OutputKind, atomic_output, atomic_write_text, check_output_file, kill_point,
                          read_json_file, staged_output_dir)
from nnlab.inference.faces.detect import Face, FaceDetector
from nnlab.inference.faces.embed import list_images
from nnlab.inference.faces.photos import crop_size, embed_faces, image_faces
from nnlab.inference.faces.search import make_index
from nnlab.inference.models.image import MAX_PIXELS, ImageModel
from nnlab.ingest.image_files import read_image
from nnlab.metrics import open_set_identification
from nnlab.version import __version__

FORMAT = "nnlab-gallery"
FORMAT_VERSION = 1
#: a gallery folder as `Gallery.save` writes it (see `fileio.check_output_dir`)
GALLERY_FOLDER = OutputKind("gallery", "gallery.json", frozenset({"gallery.json", "embeddings.npz"}))
UNKNOWN = "unknown"
MAX_NEIGHBOURS = 64  # neighbours fetched per query to find the best and runner-up identities


@dataclass
class Match:
    """One query's answer: the best identity (or ``unknown``), its similarity, and the runner-up."""

    identity: str
    similarity: float
    best: str
    runner_up: str | None
    runner_up_similarity: float | None
    face: Face | None = None  # the face of a photo this answers for (None: an image used whole)
    path: str | None = None    # the image it comes from, when known
    label: str | None = None   # the query's known identity (a folder of identity sub-folders)
    face_number: int = -1      # its number in the photo, 0 the largest (-1: an image used whole)

    @property
    def accepted(self) -> bool:
        return self.identity != UNKNOWN


@dataclass
class Gallery:
    """Enrolled embeddings with their identities (see the module docstring)."""

    fingerprint: str
    model: str
    identities: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    paths: list[str] = field(default_factory=list)
    search_backend: str = "auto"
    skipped: int = field(default=0, repr=False, compare=False)  # images the last `add` found enrolled already
    # photos the last `add` left out, with the reason (no face, several faces)
    skipped_photos: list[tuple[str, str]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dimension(self) -> int | None:
        return None if self.embeddings is None else int(self.embeddings.shape[1])

    def check_model(self, model: ImageModel | str, where: str = "") -> None:
        """Refuse a model (or fingerprint) other than the one this gallery was built with."""
        fp = model if isinstance(model, str) else model.fingerprint
        if fp != self.fingerprint:
            raise NnlabError(f"{where or 'gallery'}: built with model {self.model!r} (fingerprint {self.fingerprint}), "
                             f"but these embeddings come from fingerprint {fp}; build a gallery with this model "
                             "(nnlab gallery build)")

    def means(self) -> np.ndarray:
        """(identities, D) L2-normalised mean embedding of each identity."""
        sums = np.zeros((len(self.identities), self.dimension or 0), dtype=np.float64)
        np.add.at(sums, self.labels, self.embeddings)
        return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # ------------------------------------------------------------------ enrolling
    def enroll(self, embeddings: np.ndarray, identities: Sequence[str], paths: Sequence[str | os.PathLike],
               fingerprint: str) -> None:
        """Add embeddings of known people (new identities are appended)."""
        self.check_model(fingerprint)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != len(identities) or len(paths) != len(identities):
            raise DataError(f"enrol: {emb.shape} embeddings for {len(identities)} identities and {len(paths)} paths")
        if self.embeddings is not None and emb.shape[1] != self.dimension:
            raise DataError(f"enrol: embeddings of dimension {emb.shape[1]}; the gallery holds {self.dimension}")
        if UNKNOWN in identities:
            raise DataError(f"enrol: a person named {UNKNOWN!r}: that is the answer for a face nobody enrolled, so "
                            "the name would be ambiguous; rename the folder")
        where = {name: i for i, name in enumerate(self.identities)}
        for name in identities:
            if name not in where:
                where[name] = len(self.identities)
                self.identities.append(name)
        labels = np.asarray([where[n] for n in identities], dtype=np.int64)
        self.embeddings = emb if self.embeddings is None else np.concatenate([self.embeddings, emb])
        self.labels = np.concatenate([self.labels, labels])
        self.paths += [str(p) for p in paths]
        self._index = None

    def add(self, model: ImageModel, folder: str | os.PathLike, batch_size: int = 64, faces: str = "auto",
            detector: FaceDetector | None = None) -> int:
        """Enrol a folder with one sub-folder of images (face crops or photos) per person; returns the images
        added. An image already in the gallery (the same file, as a path) is not enrolled twice: `skipped`
        counts them. A photo is enrolled by its one face; one with none or several is left out and listed
        in `skipped_photos` with the reason."""
        files = list_images([folder])
        if files.labels is None:
            raise DataError(f"{folder}: expected one sub-folder of images per person (the folder name is the "
                            "identity), found images directly inside")
        self.check_model(model)
        enrolled = {str(Path(p).resolve()) for p in self.paths}
        new = [i for i, p in enumerate(files.paths) if str(Path(p).resolve()) not in enrolled]
        self.skipped = len(files.paths) - len(new)
        self.skipped_photos = []
        if new:
            paths, labels = [files.paths[i] for i in new], [files.labels[i] for i in new]
            emb, items = embed_faces(model, paths, labels, faces, detector, one_face=True, batch_size=batch_size,
                                     skip=lambda p, why: self.skipped_photos.append((str(p), why)), desc="enrol")
            if items:
                self.enroll(emb, [it.label for it in items], [it.path for it in items], model.fingerprint)
            return len(items)
        return 0

    # ------------------------------------------------------------------ identifying
    def index(self):
        """The search index over the enrolled embeddings (built on first use; `.name` says which)."""
        if self._index is None:
            if not len(self):
                raise DataError("the gallery is empty; enrol people first (nnlab gallery add)")
            self._index = make_index(self.embeddings, self.search_backend)
        return self._index

    def identify(self, queries: np.ndarray | str | os.PathLike, threshold: float | None = None,
                 model: ImageModel | None = None, faces: str = "auto",
                 detector: FaceDetector | None = None) -> list[Match]:
        """Each query's best identity (``unknown`` below `threshold`), its similarity and the runner-up.
        `queries` are embeddings, or, with `model`, one photo (a path or a uint8 image): then every face
        of it is answered for (largest first; `Match.face` holds its box), and the threshold defaults to
        the model's at FPR 1e-3."""
        if model is not None:
            return self.identify_photo(queries, model, threshold, faces, detector)
        if threshold is None:
            raise NnlabError("identify: a threshold is needed for embeddings (or pass model= with a photo)")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dimension:
            raise DataError(f"queries of shape {q.shape}; the gallery holds embeddings of dimension {self.dimension}")
        most = int(np.bincount(self.labels).max())
        k = min(len(self), most + 1, MAX_NEIGHBOURS)  # most + 1 neighbours always hold two identities
        scores, rows = self.index().search(q, k)
        return [self._match(s, r, threshold) for s, r in zip(scores, rows, strict=True)]

    def identify_photo(self, photo: np.ndarray | str | os.PathLike, model: ImageModel,
                       threshold: float | None = None, faces: str = "auto",
                       detector: FaceDetector | None = None) -> list[Match]:
        """Every face of one photo (a path or a uint8 image), largest first; [] when it shows none. An
        image `faces` calls a crop (a small one, with "auto") gets one answer, without a box."""
        self.check_model(model)
        image = photo if isinstance(photo, np.ndarray) else read_image(photo, max_pixels=MAX_PIXELS)
        found = image_faces(image, crop_size(model), faces, detector)
        if not found:
            return []
        matches = self.identify(model.embed([crop for crop, _ in found]),
                                model.threshold() if threshold is None else threshold)
        where = None if isinstance(photo, np.ndarray) else str(photo)
        for k, (m, (_, face)) in enumerate(zip(matches, found, strict=True)):
            m.face, m.path, m.face_number = face, where, k if face is not None else -1
        return matches

    def _match(self, scores: np.ndarray, rows: np.ndarray, threshold: float) -> Match:
        found = rows >= 0
        if not found.any():
            return Match(UNKNOWN, float("-inf"), UNKNOWN, None, None)
        ids = self.labels[rows[found]]
        best = self.identities[ids[0]]
        other = np.flatnonzero(ids != ids[0])
        runner, runner_s = ((self.identities[ids[other[0]]], float(scores[found][other[0]])) if len(other)
                            else (None, None))
        sim = float(scores[0])
        return Match(best if sim >= threshold else UNKNOWN, sim, best, runner, runner_s)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the gallery to `folder` as a whole: built beside it, then swapped in, so that a kill at
        any moment leaves the old gallery or the new one. An existing gallery is replaced only with
        `overwrite` (`gallery add` passes it); any other non-empty folder never."""
        folder = Path(folder)
        if self.embeddings is None:
            raise DataError("the gallery is empty; nothing to save")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "nnlab_version": __version__,
                "model": self.model, "fingerprint": self.fingerprint, "dimension": self.dimension,
                "images": len(self), "identities": self.identities, "paths": self.paths}
        with staged_output_dir(folder, GALLERY_FOLDER, overwrite) as tmp:
            with open(tmp / "embeddings.npz", "wb") as fh:
                np.savez(fh, embeddings=self.embeddings, labels=self.labels, means=self.means())
            kill_point("gallery-embeddings-written")
            atomic_write_text(tmp / "gallery.json", json.dumps(meta, indent=1) + "\n")
            kill_point("gallery-meta-written")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, search_backend: str = "auto") -> Gallery:
        folder = Path(folder)
        meta = _read_meta(folder)
        try:
            # our own handle: np.load leaves its file open when the zip is damaged
            with open(folder / "embeddings.npz", "rb") as fh, np.load(fh, allow_pickle=False) as z:
                emb, labels = z["embeddings"], z["labels"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{folder}/embeddings.npz: unreadable ({exc})") from None
        if emb.ndim != 2 or emb.dtype.kind != "f" or labels.ndim != 1 or labels.dtype.kind not in "iu" or \
                not np.isfinite(emb).all():
            raise DataError(f"{folder}/embeddings.npz: not a gallery's embeddings ({emb.dtype} {emb.shape} embeddings, "
                            f"{labels.dtype} {labels.shape} labels; finite floats N x D and N integers expected)")
        if len(emb) != len(labels) or len(labels) != len(meta["paths"]) or meta.get("dimension", emb.shape[1]) != \
                emb.shape[1] or (len(labels) and (labels.min() < 0 or labels.max() >= len(meta["identities"]))):
            raise DataError(f"{folder}: embeddings.npz and gallery.json disagree (edited by hand?); build it again")
        emb, labels = emb.astype(np.float32), labels.astype(np.int64)
        return cls(fingerprint=meta["fingerprint"], model=meta["model"], identities=list(meta["identities"]),
                   embeddings=emb, labels=labels, paths=list(meta["paths"]), search_backend=search_backend)


def _read_meta(folder: Path) -> dict[str, Any]:
    file = folder / "gallery.json"
    try:
        meta = read_json_file(file)
    except FileNotFoundError:
        raise NnlabError(f"{folder}: not a gallery (no gallery.json); make one with nnlab gallery build") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{file}: not an {FORMAT} v{FORMAT_VERSION} file")
    missing = [k for k in ("fingerprint", "model", "identities", "paths") if k not in meta]
    if missing:
        raise DataError(f"{file}: missing {', '.join(missing)}")
    wrong = [k for k in ("fingerprint", "model") if not isinstance(meta[k], str)] + \
        [k for k in ("identities", "paths") if not isinstance(meta[k], list) or not all(isinstance(x, str) for x in meta[k])]
    if wrong:
        raise DataError(f"{file}: {', '.join(wrong)} of the wrong type (edited by hand?); build the gallery again")
    return meta


def build_gallery(model: ImageModel, folder: str | os.PathLike, batch_size: int = 64,
                  search_backend: str = "auto", faces: str = "auto", detector: FaceDetector | None = None) -> Gallery:
    """A new gallery of the people in `folder` (one sub-folder of face crops or photos per person)."""
    if model.task != "embedding":
        model.embed([])  # raises the message saying an embedding model is needed
    gallery = Gallery(fingerprint=model.fingerprint, model=model.name, search_backend=search_backend)
    gallery.add(model, folder, batch_size, faces, detector)
    return gallery


def identify_files(model: ImageModel, gallery: Gallery, paths: Sequence[Path], threshold: float,
                   batch_size: int = 64, faces: str = "auto", detector: FaceDetector | None = None,
                   labels: Sequence[str] | None = None,
                   skip: Callable[[Path, str], None] | None = None) -> list[Match]:
    """Identify image files against `gallery` (which must have been built with `model`): one answer per
    crop, and per face of each photo (`Match.face`, `Match.path`; `Match.label` from `labels`). A photo
    without a face goes to `skip(path, reason)` (a DataError without it)."""
    gallery.check_model(model)
    emb, items = embed_faces(model, paths, labels, faces, detector, batch_size=batch_size, skip=skip,
                             desc="identify")
    matches = gallery.identify(emb, threshold) if items else []
    for m, it in zip(matches, items, strict=True):
        m.face, m.path, m.label, m.face_number = it.face, str(it.path), it.label, it.index
    return matches


def write_matches(path: str | os.PathLike, paths: Sequence[Path], matches: Sequence[Match],
                  labels: Sequence[str] | None = None, threshold: float | None = None) -> Path:
    """CSV: path, [face, box], [label], identity (or unknown), similarity, best, runner_up,
    runner_up_similarity, [threshold]; face (its number in the photo, 0 the largest) and box (x0 y0 x1 y1)
    when any image was a photo, threshold (the one used) when given. Names that a spreadsheet would run as a formula (=, +, -, @ first) are written
    with a leading '."""
    path = check_output_file(Path(path))
    fmt = lambda x: "" if x is None else f"{x:.6f}"
    cell = lambda text: f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
    photos = any(m.face is not None for m in matches)
    with atomic_output(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *(["face", "box"] if photos else []), *(["label"] if labels is not None else []),
                         "identity", "similarity", "best", "runner_up", "runner_up_similarity",
                         *(["threshold"] if threshold is not None else [])])
        for i, (p, m) in enumerate(zip(paths, matches, strict=True)):
            where = [] if not photos else ["" if m.face is None else m.face_number,
                                           "" if m.face is None else " ".join(f"{v:.0f}" for v in m.face.box)]
            writer.writerow([cell(str(p)), *where, *([cell(labels[i])] if labels is not None else []),
                             cell(m.identity), fmt(m.similarity), cell(m.best), cell(m.runner_up or ""),
                             fmt(m.runner_up_similarity), *([fmt(threshold)] if threshold is not None else [])])
    return path


def identification_report(matches: Sequence[Match], labels: Sequence[str], gallery: Gallery,
                          threshold: float) -> dict[str, Any]:
    """Rank-1, detection-and-identification rate, false-reject and false-accept rates of labelled queries:
    a query whose label is an enrolled identity is genuine, any other an impostor."""
    enrolled = set(gallery.identities)
    return open_set_identification([m.best for m in matches], [m.similarity for m in matches], list(labels),
                                   [lab in enrolled for lab in labels], threshold)
