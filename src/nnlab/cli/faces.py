"""Face (and any embedding model's) commands: faces detect, embed, gallery build / add, identify.

MODEL is a run directory (torch) or an `nnlab export` directory (onnxruntime) of an embedding model.
Every command that reads faces takes photos as well as crops (--faces auto|detect|crops): the faces
of a photo are detected (MTCNN) and aligned onto the ArcFace template at the model's input size."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app
from nnlab.errors import NnlabError
from nnlab.fileio import check_output_dir

gallery_app = typer.Typer(no_args_is_help=True, help="Galleries of enrolled people: build one, add people.\n\n"
                          "Example: nnlab gallery build export/faces people/ --out gallery/")
app.add_typer(gallery_app, name="gallery")
faces_app = typer.Typer(no_args_is_help=True, help="Faces in photographs: detect and align them.")
app.add_typer(faces_app, name="faces")

MODEL_HELP = "A run directory or an `nnlab export` directory of an embedding model."
BATCH_HELP = "Images per model call."
FACES_HELP = ("auto: images over 256 px a side are photos (every face detected and aligned), smaller ones "
              "face crops used whole; detect: every image is a photo; crops: none is.")


def _skipped(path: Path, reason: str) -> None:
    typer.echo(f"skipped {path}: {reason}", err=True)


def _report_skipped(gallery) -> None:
    for path, reason in gallery.skipped_photos:
        _skipped(Path(path), reason)


@faces_app.command("detect")
def faces_detect(photos: list[Path] = typer.Argument(..., metavar="PHOTOS...",
                                                     help="Photos, folders of photos, or one folder of "
                                                          "identity sub-folders (kept in crops/)."),
                 out: Path = typer.Option(..., "--out", help="Folder to write: faces.json, detections/, "
                                                             "crops/, previews/."),
                 size: int = typer.Option(112, "--size", min=16, max=1024,
                                          help="Side of the square aligned crops (the ArcFace template scaled)."),
                 max_side: int = typer.Option(1024, "--max-side", min=64,
                                              help="Photos are detected at most this many pixels a side."),
                 min_face_size: int = typer.Option(20, "--min-face-size", min=6,
                                                   help="Smallest face found, in pixels at that working size."),
                 overwrite: bool = typer.Option(False, "--overwrite", help="Replace a faces folder at --out.")) -> None:
    """Every face of each photo: aligned crops, a JSON per photo (boxes, landmarks, scores), a preview.

    Example: nnlab faces detect photos/ --out faces/"""
    from nnlab.inference.faces.detect import MAX_SIDE, MIN_FACE_SIZE, FaceDetector, default_detector  # heavy
    from nnlab.inference.faces.extract import write_faces  # heavy (torch)

    detector = (default_detector() if (max_side, min_face_size) == (MAX_SIDE, MIN_FACE_SIZE)
                else FaceDetector(max_side=max_side, min_face_size=min_face_size))
    summary = write_faces(photos, out, (size, size), detector, overwrite, skip=_skipped)
    typer.echo(f"{summary['faces']} faces in {len(summary['photos'])} photos ({len(summary['skipped'])} skipped) "
               f"-> {out}")


@app.command()
def embed(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
          inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                              help="Images, folders of images, or one folder of identity "
                                                   "sub-folders (their names become the labels)."),
          out: Path = typer.Option(..., "--out", help="The .npz to write (embeddings, paths, labels, fingerprint)."),
          batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP),
          faces: str = typer.Option("auto", "--faces", help=FACES_HELP)) -> None:
    """L2-normalised embeddings of images, in batches: one per face crop, and per face of each photo.

    Example: nnlab embed export/faces photos/ --out embeddings.npz
    """
    from nnlab.inference.faces.embed import ImageFiles, list_images, save_embeddings  # heavy (torch)
    from nnlab.inference.faces.photos import boxes_of, check_mode, embed_faces  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    check_mode(faces)
    model = load_image_model(model_path)
    files = list_images(inputs)
    emb, items = embed_faces(model, files.paths, files.labels, faces, batch_size=batch_size, skip=_skipped)
    if not items:
        raise NnlabError("no face to embed: every photo was skipped")
    found = ImageFiles([it.path for it in items], None if files.labels is None else [it.label for it in items])
    written = save_embeddings(out, found, emb, model.fingerprint, boxes_of(items))
    labelled = f", {len(set(found.labels))} identities" if found.labels else ""
    typer.echo(f"{len(emb)} embeddings of dimension {emb.shape[1]}{labelled} -> {written}")


@gallery_app.command("build")
def gallery_build(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
                  folder: Path = typer.Argument(..., metavar="FOLDER", help="One sub-folder of images per person."),
                  out: Path = typer.Option(..., "--out", help="Gallery directory to write."),
                  batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP),
                  overwrite: bool = typer.Option(False, "--overwrite", help="Replace a gallery already at --out "
                                                 "(any other non-empty folder is refused)."),
                  faces: str = typer.Option("auto", "--faces", help=FACES_HELP)) -> None:
    """Enrol the people of a folder in a new gallery: face crops, or photos of one face each.

    Example: nnlab gallery build export/faces people/ --out gallery/
    """
    from nnlab.inference.faces.gallery import GALLERY_FOLDER, build_gallery  # heavy (torch)
    from nnlab.inference.faces.photos import check_mode  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    check_mode(faces)
    check_output_dir(out, GALLERY_FOLDER, overwrite)  # before the images are embedded
    gallery = build_gallery(load_image_model(model_path), folder, batch_size, faces=faces)
    _report_skipped(gallery)
    gallery.save(out, overwrite=overwrite)
    typer.echo(f"gallery of {len(gallery.identities)} people ({len(gallery)} images) -> {out}")


@gallery_app.command("add")
def gallery_add(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
                gallery_dir: Path = typer.Argument(..., metavar="GALLERY", help="Gallery directory."),
                folder: Path = typer.Argument(..., help="One sub-folder of images per person to enrol."),
                batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP),
                faces: str = typer.Option("auto", "--faces", help=FACES_HELP)) -> None:
    """Enrol more people (or more images of enrolled people) in a gallery.

    Example: nnlab gallery add export/faces gallery/ newcomers/
    """
    from nnlab.inference.faces.gallery import Gallery  # heavy (torch)
    from nnlab.inference.faces.photos import check_mode  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    check_mode(faces)
    gallery = Gallery.load(gallery_dir)
    model = load_image_model(model_path)
    gallery.check_model(model, str(gallery_dir))
    before = len(gallery.identities)
    added = gallery.add(model, folder, batch_size, faces=faces)
    _report_skipped(gallery)
    if gallery.skipped:
        typer.echo(f"skipped {gallery.skipped} images already in the gallery")
    if not added and not len(gallery):
        raise NnlabError(f"{folder}: nothing enrolled (every photo was skipped)")
    gallery.save(gallery_dir, overwrite=True)
    typer.echo(f"added {added} images ({len(gallery.identities) - before} new people); "
               f"the gallery holds {len(gallery.identities)} people -> {gallery_dir}")


@app.command()
def identify(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
             gallery_dir: Path = typer.Argument(..., metavar="GALLERY", help="Gallery directory."),
             inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                                 help="Images, folders of images, or a folder of identity "
                                                      "sub-folders (then rates are reported)."),
             out: Path = typer.Option(..., "--out", help="matches.csv to write."),
             threshold: float | None = typer.Option(None, "--threshold",
                                                    help="Cosine similarity below which the answer is unknown."),
             fpr: float = typer.Option(1e-3, "--fpr", help="Without --threshold: the threshold the run's open-set "
                                                           "verification ROC gives at this false-positive rate."),
             search: str = typer.Option("auto", "--search", help="auto, numpy, faiss-flat, faiss-ivf, faiss-hnsw or faiss-pq."),
             batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP),
             faces: str = typer.Option("auto", "--faces", help=FACES_HELP)) -> None:
    """Who is in each image (each face of a photo): the best enrolled identity, or unknown below the threshold.

    Example: nnlab identify export/faces gallery/ photos/ --out matches.csv --fpr 1e-3
    """
    from nnlab.inference.faces.embed import list_images  # heavy (torch)
    from nnlab.inference.faces.gallery import Gallery, identification_report, identify_files, write_matches  # heavy
    from nnlab.inference.faces.photos import check_mode  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    gallery = Gallery.load(gallery_dir, search_backend=search)
    model = load_image_model(model_path)
    gallery.check_model(model, str(gallery_dir))
    if threshold is None:
        threshold = model.threshold(fpr)
        source = f"the run's verification ROC at FPR {fpr:g}"
    else:
        source = "--threshold"
    if not -1.0 <= threshold <= 1.0:
        raise NnlabError(f"--threshold {threshold}: a cosine similarity lies in -1..1")
    check_mode(faces)
    files = list_images(inputs)
    matches = identify_files(model, gallery, files.paths, threshold, batch_size, faces, labels=files.labels,
                             skip=_skipped)
    if not matches:
        raise NnlabError(f"no face found in any of the {len(files.paths)} images; nothing to identify")
    labels = None if files.labels is None else [m.label for m in matches]
    write_matches(out, [m.path for m in matches], matches, labels, threshold)
    index = gallery.index()
    unknown = sum(not m.accepted for m in matches)
    typer.echo(f"threshold {threshold:.4f} ({source}); search: {index.name} over {len(gallery)} images"
               + (f" ({index.note})" if index.note else ""))
    for m in matches:
        if m.face is not None:
            typer.echo(f"{m.path} face {m.face_number} [{' '.join(f'{v:.0f}' for v in m.face.box)}]: "
                       f"{m.identity} ({m.similarity:.4f})")
    photos = len({m.path for m in matches if m.face is not None})
    shown = f"{len(matches)} faces in {len(files.paths)} images" if photos else f"{len(matches)} images"
    typer.echo(f"{shown}: {len(matches) - unknown} identified, {unknown} unknown -> {out}")
    if labels is not None and matches:
        report = identification_report(matches, labels, gallery, threshold)
        typer.echo("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
