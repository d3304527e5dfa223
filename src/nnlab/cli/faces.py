"""Face (and any embedding model's) commands: embed, gallery build / add, identify.

MODEL is a run directory (torch) or an `nnlab export` directory (onnxruntime) of an embedding model."""

from __future__ import annotations

from pathlib import Path

import typer

from nnlab.cli.app import app
from nnlab.errors import NnlabError
from nnlab.fileio import check_output_dir

gallery_app = typer.Typer(no_args_is_help=True, help="Galleries of enrolled people: build one, add people.\n\n"
                          "Example: nnlab gallery build export/faces people/ --out gallery/")
app.add_typer(gallery_app, name="gallery")

MODEL_HELP = "A run directory or an `nnlab export` directory of an embedding model."
BATCH_HELP = "Images per model call."


@app.command()
def embed(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
          inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                              help="Images, folders of images, or one folder of identity "
                                                   "sub-folders (their names become the labels)."),
          out: Path = typer.Option(..., "--out", help="The .npz to write (embeddings, paths, labels, fingerprint)."),
          batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP)) -> None:
    """L2-normalised embeddings of images, in batches.

    Example: nnlab embed export/faces photos/ --out embeddings.npz
    """
    from nnlab.inference.faces.embed import embed_files, list_images, save_embeddings  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    model = load_image_model(model_path)
    files = list_images(inputs)
    emb = embed_files(model, files.paths, batch_size)
    written = save_embeddings(out, files, emb, model.fingerprint)
    labelled = f", {len(set(files.labels))} identities" if files.labels else ""
    typer.echo(f"{len(emb)} embeddings of dimension {emb.shape[1]}{labelled} -> {written}")


@gallery_app.command("build")
def gallery_build(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
                  folder: Path = typer.Argument(..., metavar="FOLDER", help="One sub-folder of images per person."),
                  out: Path = typer.Option(..., "--out", help="Gallery directory to write."),
                  batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP),
                  overwrite: bool = typer.Option(False, "--overwrite", help="Replace a gallery already at --out "
                                                 "(any other non-empty folder is refused).")) -> None:
    """Enrol the people of a folder in a new gallery.

    Example: nnlab gallery build export/faces people/ --out gallery/
    """
    from nnlab.inference.faces.gallery import GALLERY_FOLDER, build_gallery  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    check_output_dir(out, GALLERY_FOLDER, overwrite)  # before the images are embedded
    gallery = build_gallery(load_image_model(model_path), folder, batch_size)
    gallery.save(out, overwrite=overwrite)
    typer.echo(f"gallery of {len(gallery.identities)} people ({len(gallery)} images) -> {out}")


@gallery_app.command("add")
def gallery_add(model_path: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
                gallery_dir: Path = typer.Argument(..., metavar="GALLERY", help="Gallery directory."),
                folder: Path = typer.Argument(..., help="One sub-folder of images per person to enrol."),
                batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP)) -> None:
    """Enrol more people (or more images of enrolled people) in a gallery.

    Example: nnlab gallery add export/faces gallery/ newcomers/
    """
    from nnlab.inference.faces.gallery import Gallery  # heavy (torch)
    from nnlab.inference.models.image import load_image_model  # heavy (torch)

    gallery = Gallery.load(gallery_dir)
    model = load_image_model(model_path)
    gallery.check_model(model, str(gallery_dir))
    before = len(gallery.identities)
    added = gallery.add(model, folder, batch_size)
    if gallery.skipped:
        typer.echo(f"skipped {gallery.skipped} images already in the gallery")
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
             batch_size: int = typer.Option(64, "--batch-size", min=1, help=BATCH_HELP)) -> None:
    """Who is in each image: the best enrolled identity, or unknown below the threshold.

    Example: nnlab identify export/faces gallery/ photos/ --out matches.csv --fpr 1e-3
    """
    from nnlab.inference.faces.embed import list_images  # heavy (torch)
    from nnlab.inference.faces.gallery import Gallery, identification_report, identify_files, write_matches  # heavy
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
    files = list_images(inputs)
    matches = identify_files(model, gallery, files.paths, threshold, batch_size)
    write_matches(out, files.paths, matches, files.labels)
    index = gallery.index()
    unknown = sum(not m.accepted for m in matches)
    typer.echo(f"threshold {threshold:.4f} ({source}); search: {index.name} over {len(gallery)} images"
               + (f" ({index.note})" if index.note else ""))
    typer.echo(f"{len(matches)} images: {len(matches) - unknown} identified, {unknown} unknown -> {out}")
    if files.labels is not None:
        report = identification_report(matches, files.labels, gallery, threshold)
        typer.echo("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
