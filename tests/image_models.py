"""Image models trained once per test session and shared by test_image_export, test_gallery,
test_serve_images and test_browser_images (not a test module itself): a LeNet on scikit-learn's
digits, and an ArcFace embedding model on the real ORL faces with its export and a gallery."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT, SHARED_DATA
from shared_runs import made_once, session_lock, session_root  # one folder per test session, removed at its end

ORL = SHARED_DATA / "faces" / "orl"
# recipes/faces-arcface.toml at 32 px for 6 epochs (~40 s on 2 cores): val accuracy is low, but the
# embedding already tells the 10 unseen people apart (open-set rank-1 ~0.75)
FACES_OVERRIDES = ("data.image_size=32", "train.epochs=6", f'data.path="{ORL}"')


@made_once
def digits_run() -> Path:
    """recipes/digits-lenet.toml for 2 epochs (a few seconds)."""
    from nnlab.config import load_config
    from nnlab.training import fit

    cfg = load_config(ROOT / "recipes" / "digits-lenet.toml", ["train.epochs=2"])
    return fit(cfg, out=session_root() / "digits").path


@made_once
def digits_export() -> Path:
    from nnlab.inference.models.export import export_onnx

    return export_onnx(digits_run(), session_root() / "digits-export").out_dir


@made_once
def faces_run() -> Path:
    """recipes/faces-arcface.toml shrunk (FACES_OVERRIDES) on the real ORL faces."""
    from nnlab.config import load_config
    from nnlab.training import fit

    cfg = load_config(ROOT / "recipes" / "faces-arcface.toml", list(FACES_OVERRIDES))
    return fit(cfg, out=session_root() / "faces").path


@made_once
def faces_export() -> Path:
    from nnlab.inference.models.export import export_onnx

    return export_onnx(faces_run(), session_root() / "faces-export").out_dir


def split_folders(run: Path) -> dict[str, Path]:
    """Folders of symlinks from a faces run's splits.json: ``enrol`` (the first image of each unseen
    person), ``probes`` (their other images), ``impostors`` (every image of the training identities),
    each with one sub-folder per person. Made once per run."""
    with session_lock(f"split-{run.name}"):  # another worker may be making them
        return _make_split_folders(run, session_root() / f"split-{run.name}")


def _make_split_folders(run: Path, out: Path) -> dict[str, Path]:
    if out.is_dir():
        return {name: out / name for name in ("enrol", "probes", "impostors")}
    import json

    from nnlab.ingest.images import load_folder_source

    source = load_folder_source(ORL)
    splits = json.loads((run / "splits.json").read_text())
    seen: set[str] = set()
    for split in ("test", "train", "val"):
        for i in splits[split]:
            file, person = source.files[i], source.classes[source.labels[i]]
            if split == "test":
                part = "probes" if person in seen else "enrol"
                seen.add(person)
            else:
                part = "impostors"
            target = out / part / person / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    return {name: out / name for name in ("enrol", "probes", "impostors")}


@made_once
def other_faces_run() -> Path:
    """Another embedding model (same recipe, 16 px, a few steps): its embeddings are not faces_run()'s."""
    from nnlab.config import load_config
    from nnlab.training import fit

    cfg = load_config(ROOT / "recipes" / "faces-arcface.toml",
                      ["data.image_size=16", "train.epochs=1", "train.steps_per_epoch=2", f'data.path="{ORL}"'])
    return fit(cfg, out=session_root() / "other-faces").path


def huge_png(path: Path, side: int = 10_000) -> Path:
    """A valid PNG header claiming side x side grey pixels (no image data: readers stop at the header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path
