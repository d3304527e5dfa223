"""Image data sets: every loader kind on real or generated files, transforms, datasets."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnlab.datasets.images import ImageDataset, make_transform
from nnlab.errors import ConfigError, DataError
from nnlab.ingest import idx as im
from nnlab.ingest.idx import read_idx
from nnlab.ingest.image_kinds import load_source
from nnlab.ingest.images import ImageSource

# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """A real IDX file: magic 0x0000, type code, ndim, big-endian dims, then the data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = struct.pack(">HBB", 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_set(folder: Path, n_train: int, n_test: int, gz: bool, seed: int = 0,
                  ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 6, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 6, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# --------------------------------------------------------------------------- registry


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ConfigError) as err:
        load_source("mnist-ish")
    for kind in ("digits", "idx", "npz", "folder", "bitmap", "csv"):
        assert kind in str(err.value)


def test_unknown_option_names_it_and_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"'max_per_klass'.*allowed: path, max_per_class"):
        load_source("bitmap", path=tmp_path, max_per_klass=3)


def test_missing_path_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(DataError, match="nowhere.npz"):
        load_source("npz", path=missing)
    with pytest.raises(DataError, match="nope"):
        load_source("folder", path=tmp_path / "nope")


# --------------------------------------------------------------------------- digits


def test_digits_scaled_to_uint8():
    from sklearn.datasets import load_digits

    src = load_source("digits")
    ref = load_digits()
    assert src.images.shape == (1797, 8, 8) and src.images.dtype == np.uint8
    assert src.images.max() == 255 and src.images.min() == 0
    np.testing.assert_array_equal(src.labels, ref.target)
    # 16 -> 255, 8 -> 128 (rounded), 0 -> 0
    np.testing.assert_array_equal(src.images, np.rint(ref.images * 255 / 16).astype(np.uint8))
    assert src.classes == [str(i) for i in range(10)] and src.test_mask is None


# --------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reads_gz_and_plain_files(tmp_path, gz):
    arrays = write_idx_set(tmp_path, 12, 5, gz=gz)
    src = load_source("idx", path=tmp_path)
    np.testing.assert_array_equal(src.images[:12], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(src.images[12:], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(src.labels, np.concatenate(
        [arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]]))
    assert src.test_mask.tolist() == [False] * 12 + [True] * 5
    assert src.images.dtype == np.uint8 and src.labels.dtype == np.int64


def test_idx_without_test_part_and_fashion_names(tmp_path):
    arrays = write_idx_set(tmp_path, 8, 2, gz=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()
    src = load_source("idx", path=tmp_path, dataset="fashion-mnist")
    assert len(src) == 8 and src.test_mask is None
    assert src.classes[0] == "T-shirt/top" and src.classes[9] == "Ankle boot"
    assert src.classes[src.labels[0]] == im.FASHION_MNIST_CLASSES[arrays["train-labels-idx1-ubyte"][0]]


def test_read_idx_other_types_and_byte_order(tmp_path):
    values = np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000
    (tmp_path / "a.idx").write_bytes(idx_bytes(values))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), values)
    floats = np.linspace(-1, 1, 7, dtype=np.float32)
    (tmp_path / "b.idx").write_bytes(idx_bytes(floats))
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx"), floats)


def test_idx_bad_magic_truncated_and_bad_gzip_name_the_file(tmp_path):
    write_idx_set(tmp_path, 10, 3, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    good = images.read_bytes()

    images.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not an IDX file \(bad magic"):
        load_source("idx", path=tmp_path)

    images.write_bytes(good[:-7])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: IDX file truncated"):
        load_source("idx", path=tmp_path)

    images.write_bytes(good[:10])  # header cut inside the dimensions
    with pytest.raises(DataError, match="truncated IDX header"):
        load_source("idx", path=tmp_path)

    images.unlink()
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(good)[:40])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not a readable gzip"):
        load_source("idx", path=tmp_path)


def test_idx_mismatched_counts_and_missing_labels(tmp_path):
    write_idx_set(tmp_path, 10, 3, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(DataError, match="holds 10 images but .* holds 9 labels"):
        load_source("idx", path=tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        load_source("idx", path=tmp_path)


def test_idx_download_offline_fails_fast_with_one_clear_error(tmp_path, monkeypatch):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_source("idx", path=tmp_path / "mnist", download=True, dataset="mnist")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "could not download" in message and "offline?" in message
    assert "place the files train-images-idx3-ubyte.gz" in message and str(tmp_path / "mnist") in message
    assert calls == ["https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"]
    assert not list((tmp_path / "mnist").iterdir())  # no half-written file left


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_idx_download_checks_md5_and_skips_present_files(tmp_path, monkeypatch):
    served_dir = tmp_path / "server"
    arrays = write_idx_set(served_dir, 7, 3, gz=True)
    served = {p.name: p.read_bytes() for p in served_dir.iterdir()}
    spec = {"url": "https://example.invalid/fashion/",
            "files": {name: hashlib.md5(data).hexdigest() for name, data in served.items()}}
    monkeypatch.setitem(im.IDX_DOWNLOADS, "fashion-mnist", spec)
    fetched = []

    def fake_urlopen(url, *args, **kwargs):
        fetched.append(url.rsplit("/", 1)[1])
        return FakeResponse(served[fetched[-1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "fashion"
    src = load_source("idx", path=target, download=True, dataset="fashion-mnist")
    assert sorted(fetched) == sorted(served)
    np.testing.assert_array_equal(src.images[:7], arrays["train-images-idx3-ubyte"])
    assert src.classes == im.FASHION_MNIST_CLASSES and src.test_mask.sum() == 3

    fetched.clear()
    load_source("idx", path=target, download=True, dataset="fashion-mnist")
    assert fetched == []  # everything present: nothing fetched again

    (target / "t10k-labels-idx1-ubyte.gz").unlink()
    spec["files"]["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match="md5 sum does not match"):
        load_source("idx", path=target, download=True, dataset="fashion-mnist")
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(target.glob("*.part"))


# --------------------------------------------------------------------------- npz


def test_npz_on_the_shared_mnist_subset(shared_data):
    path = shared_data / "digits/mnist-mini1000/mini-mnist-1000.npz"
    src = load_source("npz", path=path)
    with np.load(path) as raw:
        np.testing.assert_array_equal(src.images, raw["images"])
        np.testing.assert_array_equal(src.labels, raw["labels"])
    assert src.images.shape == (1000, 28, 28) and src.classes == [str(i) for i in range(10)]
    assert np.bincount(src.labels).tolist() == [100] * 10


def test_npz_missing_key_lists_present_keys(shared_data):
    path = shared_data / "digits/mnist-mini1000/mini-mnist-1000.npz"
    with pytest.raises(DataError) as err:
        load_source("npz", path=path, images_key="x")
    assert "no array named 'x'" in str(err.value)
    for key in ("images", "labels", "img_filenames"):
        assert key in str(err.value)


def test_npz_shape_checks_float_scaling_and_string_labels(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, images=np.zeros((4, 8, 8)), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="one label per image"):
        load_source("npz", path=path)
    np.savez(path, images=np.zeros((4, 64)), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"\(N, H, W\) or \(N, H, W, C\)"):
        load_source("npz", path=path)
    np.savez(path, images=np.full((4, 8, 8), 300.0), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="0..255"):
        load_source("npz", path=path)
    np.savez(path, images=np.full((3, 8, 8, 3), 0.5, np.float32), labels=np.array(["cat", "ant", "cat"]))
    src = load_source("npz", path=path)
    assert src.images.dtype == np.uint8 and src.images.max() == 128
    assert src.classes == ["ant", "cat"] and src.labels.tolist() == [1, 0, 1]
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 5]))
    with pytest.raises(DataError, match="label 5 has no name"):
        load_source("npz", path=path, classes=["a", "b"])


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([{"a": 1}] * 2, dtype=object), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="without pickle"):
        load_source("npz", path=path)


# --------------------------------------------------------------------------- folder


def test_folder_on_the_orl_faces(shared_data):
    root = shared_data / "faces/orl"
    src = load_source("folder", path=root)
    assert len(src.classes) == 40 and len(src) == 400 and src.images is None
    assert src.classes[:3] == ["s1", "s2", "s3"] and src.classes[-1] == "s40"
    assert np.bincount(src.labels).tolist() == [10] * 40
    assert [f.name for f in src.files[:10]] == [f"{i}.pgm" for i in range(1, 11)]
    assert all(f.parent.name == src.classes[label] for f, label in zip(src.files, src.labels))
    first = src.image(0)
    assert first.shape == (112, 92) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, np.asarray(Image.open(root / "s1/1.pgm")))
    assert src.skipped == {}

    ds = ImageDataset(src, np.arange(0, 400, 40), make_transform(False, 64, 3, False))
    x, y = ds[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == src.labels[120]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated


def make_mixed_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    save_png(root / "cat/1.png", rng.integers(0, 256, (20, 16, 3), dtype=np.uint8))   # RGB
    save_png(root / "cat/2.png", rng.integers(0, 256, (10, 12), dtype=np.uint8))      # grey
    Image.fromarray(rng.integers(0, 256, (9, 9, 4), dtype=np.uint8), "RGBA").save(root / "cat/3.png")
    save_png(root / "dog/a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)).save(root / "dog/b.jpg")
    Image.fromarray(rng.integers(0, 256, (14, 14), dtype=np.uint8)).save(root / "dog/c.bmp")
    (root / "dog/notes.txt").write_text("not an image")
    return root


def test_folder_mixed_grey_rgb_and_formats(tmp_path):
    root = make_mixed_folder(tmp_path / "pets")
    src = load_source("folder", path=root)
    assert src.classes == ["cat", "dog"] and src.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [f.name for f in src.files] == ["1.png", "2.png", "3.png", "a.png", "b.jpg", "c.bmp"]
    assert src.image(0).shape == (20, 16, 3) and src.image(1).shape == (10, 12)
    assert src.image(2).shape == (9, 9, 3)  # alpha dropped
    for channels in (1, 3):
        ds = ImageDataset(src, np.arange(len(src)), make_transform(False, 12, channels, False))
        batch = torch.stack([ds[i][0] for i in range(len(ds))])
        assert batch.shape == (6, channels, 12, 12)
    # RGB -> grey uses the luminance Pillow uses
    rgb = src.image(0)
    grey = make_transform(False, 20, 1, False)(rgb[:, :16])
    expected = np.asarray(Image.fromarray(rgb).convert("L").resize((20, 20), Image.BILINEAR))
    assert np.abs((grey[0].numpy() * 0.5 + 0.5) * 255 - expected).mean() < 8


def test_folder_corrupt_truncated_and_empty(tmp_path):
    root = make_mixed_folder(tmp_path / "pets")
    png = root / "cat/1.png"
    (root / "cat/broken.png").write_bytes(png.read_bytes()[:60])  # truncated
    (root / "dog/zz-garbage.png").write_bytes(b"this is no png at all")
    (root / "empty").mkdir()

    with pytest.raises(DataError, match=r"cat/broken.png"):
        load_source("folder", path=root)
    src = load_source("folder", path=root, on_bad="skip")
    assert src.skipped == {"unreadable": 2, "empty_class": 1}
    assert src.classes == ["cat", "dog"] and len(src) == 6
    assert all("broken" not in f.name and "garbage" not in f.name for f in src.files)

    (root / "cat/broken.png").unlink()
    (root / "dog/zz-garbage.png").unlink()
    with pytest.raises(DataError, match=r"class folder .*empty holds no readable images"):
        load_source("folder", path=root)


def test_folder_damage_past_the_header_names_the_file_when_read(tmp_path):
    root = tmp_path / "set"
    save_png(root / "a/1.png", np.zeros((8, 8), np.uint8))
    bad = root / "b/1.jpg"
    bad.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG")
    bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # header intact, data cut

    # The default full check catches it while listing ...
    with pytest.raises(DataError, match=r"b/1.jpg"):
        load_source("folder", path=root)
    # ... a header-only check lets it through, and reading it later names it.
    src = load_source("folder", path=root, verify="header")
    ds = ImageDataset(src, np.arange(len(src)), make_transform(False, 8, 1, False))
    with pytest.raises(DataError, match=r"cannot read image .*b/1.jpg"):
        ds[1]


def test_folder_class_selection(tmp_path):
    root = make_mixed_folder(tmp_path / "pets")
    src = load_source("folder", path=root, classes=["dog"])
    assert src.classes == ["dog"] and len(src) == 3
    with pytest.raises(DataError, match="no class folder 'cow'"):
        load_source("folder", path=root, classes=["cow"])


# --------------------------------------------------------------------------- bitmap


def test_bitmap_on_the_shared_quickdraw_files(shared_data):
    root = shared_data / "quickdraw/bitmap28"
    src = load_source("bitmap", path=root, max_per_class=30)
    assert src.classes == ["bee", "candle", "car", "clock", "fish", "guitar", "octopus",
                           "snowman", "tree", "umbrella"]
    assert src.images.shape == (300, 28, 28) and np.bincount(src.labels).tolist() == [30] * 10
    fish = np.load(root / "full_numpy_bitmap_fish.npy")
    np.testing.assert_array_equal(src.images[src.labels == 4], fish[:30].reshape(-1, 28, 28))
    full = load_source("bitmap", path=root, classes=["tree", "bee"])
    assert full.classes == ["tree", "bee"] and len(full) == 1000


def test_bitmap_words_with_spaces_and_bad_shapes(tmp_path):
    np.save(tmp_path / "The Eiffel Tower.npy", np.zeros((2, 784), np.uint8))  # bucket naming
    assert load_source("bitmap", path=tmp_path).classes == ["The Eiffel Tower"]
    np.save(tmp_path / "full_numpy_bitmap_The Eiffel Tower.npy", np.zeros((3, 784), np.uint8))
    src = load_source("bitmap", path=tmp_path)
    assert src.classes == ["The Eiffel Tower"] and src.images.shape == (3, 28, 28)
    np.save(tmp_path / "full_numpy_bitmap_bad.npy", np.zeros((3, 100), np.uint8))
    with pytest.raises(DataError, match=r"full_numpy_bitmap_bad.npy: expected a uint8 array of shape \(N, 784\)"):
        load_source("bitmap", path=tmp_path)


# --------------------------------------------------------------------------- csv


def test_csv_on_uci_optdigits_matches_sklearn_digits(shared_data):
    from sklearn.datasets import load_digits

    root = shared_data / "digits/uci-optdigits"
    src = load_source("csv", path=root / "optdigits.tra", test_path=root / "optdigits.tes",
                      shape=[8, 8], scale=16)
    assert src.images.shape == (3823 + 1797, 8, 8) and src.images.dtype == np.uint8
    assert src.test_mask.sum() == 1797 and not src.test_mask[:3823].any()
    assert src.classes == [str(i) for i in range(10)]
    # The UCI test file is scikit-learn's digits set.
    digits = load_digits()
    np.testing.assert_array_equal(src.labels[src.test_mask], digits.target)
    np.testing.assert_array_equal(src.images[src.test_mask],
                                  np.rint(digits.images * 255 / 16).astype(np.uint8))
    # header auto-detected: the first training row is data, not "Block 1, ..."
    first = np.loadtxt(root / "optdigits.tra", delimiter=",", skiprows=1, max_rows=1)
    np.testing.assert_array_equal(src.images[0].ravel(), np.rint(first[:-1] * 255 / 16))


def test_csv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("1,2,3,4,0\n1,2,x,4,1\n")
    with pytest.raises(DataError, match=r"rows.csv:2: non-numeric"):
        load_source("csv", path=path)
    path.write_text("1,2,3,4,0\n1,2,3,1\n")
    with pytest.raises(DataError, match=r"rows.csv:2: 4 columns, expected 5"):
        load_source("csv", path=path)
    path.write_text("1,2,3,0\n")
    with pytest.raises(ConfigError, match="do not form a square"):
        load_source("csv", path=path)
    path.write_text("a,b,c,d,label\n0,2,4,4,cat\n4,4,2,0,dog\n")
    src = load_source("csv", path=path, header="auto")
    assert src.classes == ["cat", "dog"] and src.images.shape == (2, 2, 2)
    assert src.images[0].ravel().tolist() == [0, 128, 255, 255]  # scale = data max (4)


# --------------------------------------------------------------------------- transforms and datasets


def test_transform_output_and_normalisation():
    image = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    out = make_transform(False, 8, 1, False, mean=0.1, std=0.2)(image)
    assert out.shape == (1, 8, 8) and out.dtype == torch.float32 and type(out) is torch.Tensor
    np.testing.assert_allclose(out[0].numpy(), (image / 255 - 0.1) / 0.2, atol=1e-5)
    up = make_transform(False, 28, 3, False)(image)
    assert up.shape == (3, 28, 28)
    with pytest.raises(ConfigError):
        make_transform(False, 28, 2, False)


def test_batched_fetch_equals_one_by_one():
    src = load_source("digits")
    ds = ImageDataset(src, np.arange(100, 164), make_transform(False, 16, 3, False))
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=False)
    xs, ys = zip(*loader)
    batched = torch.cat(xs)
    single = torch.stack([ds[i][0] for i in range(len(ds))])
    torch.testing.assert_close(batched, single)
    assert torch.cat(ys).tolist() == ds.labels.tolist() == src.labels[100:164].tolist()


def test_training_loader_yields_whole_batches_in_the_epoch_order():
    """The loaders hand over batches made as one stack (no per-sample collation), in the sampler's
    order for the epoch: the same images and labels a per-sample DataLoader would give."""
    from nnlab.config import validate
    from nnlab.datasets import build_data
    from nnlab.datasets.samplers import EpochSampler

    cfg = validate({"seed": 3, "data": {"kind": "digits", "image_size": 16, "batch_size": 100, "channels": 3}})
    bundle = build_data(cfg)
    loader = bundle.loaders["train"]
    n = len(bundle.ids["train"])
    plain = make_transform(False, 16, 3, False)
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // 100) and len(batches[-1][1]) == (n % 100 or 100)
        order = EpochSampler(n, shuffle=True, seed=3, batch_size=None)
        order.set_epoch(epoch)
        want = bundle.ids["train"][order.order()]
        got_x, got_y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
        assert got_y.dtype == torch.long and got_y.tolist() == load_source("digits").labels[want].tolist()
        torch.testing.assert_close(got_x, plain.batch(load_source("digits").images[want]))
    val = torch.cat([y for _, y in bundle.loaders["val"]])  # evaluation: every item once, in order
    assert val.tolist() == bundle.labels["val"].tolist()
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        EpochSampler(10, shuffle=False, seed=0, batch_size=0)


def test_each_split_keeps_its_own_transform():
    """The replaced notebook set its val transform on a dataset object both splits
    shared, so training silently lost its augmentation. Ours cannot do that."""
    src = load_source("digits")
    train_tf = make_transform(True, 16, 1, augment=True)
    train = ImageDataset(src, np.arange(0, 50), train_tf)
    # Building val from the same source after train, with a different transform ...
    val_tf = make_transform(False, 16, 1, augment=True)
    val = ImageDataset(src, np.arange(50, 80), val_tf)
    # ... leaves train's transform in place, and it cannot be swapped on the object.
    assert train.transform is train_tf and val.transform is val_tf
    with pytest.raises(AttributeError):
        train.transform = val_tf
    with pytest.raises(AttributeError):
        src.transform  # the shared source holds no transform at all

    plain = make_transform(False, 16, 1, False)
    torch.manual_seed(0)
    train_views = [train[5][0] for _ in range(4)]
    assert any(not torch.equal(train_views[0], v) for v in train_views[1:])  # train augments
    assert not torch.equal(train_views[0], plain(src.images[5]))
    torch.manual_seed(0)
    same_image = [x for x, _ in train.__getitems__([5] * 6)]  # batched: one draw per image
    assert any(not torch.equal(same_image[0], x) for x in same_image[1:])
    for i in range(5):  # val is deterministic and un-augmented
        assert torch.equal(val[i][0], plain(src.images[50 + i]))
        assert torch.equal(val[i][0], val[i][0])
    assert val.labels.tolist() == src.labels[50:80].tolist()


def test_augmentation_is_small_and_reproducible():
    image = np.zeros((28, 28), np.uint8)
    image[10:18, 10:18] = 255
    tf = make_transform(True, 28, 1, True)
    torch.manual_seed(3)
    a = torch.stack([tf(image) for _ in range(20)])
    torch.manual_seed(3)
    b = torch.stack([tf(image) for _ in range(20)])
    assert torch.equal(a, b)
    ink = (a > 0).flatten(1).sum(1).float()  # 64 pixels, scaled by 0.9..1.1 squared (+ rounding)
    assert ink.min() >= 40 and ink.max() <= 95


def test_dataset_rejects_bad_indices():
    src = ImageSource(classes=["a", "b"], labels=np.array([0, 1, 1]), images=np.zeros((3, 4, 4), np.uint8))
    tf = make_transform(False, 4, 1, False)
    with pytest.raises(ValueError):
        ImageDataset(src, np.array([0, 3]), tf)
    ds = ImageDataset(src, np.array([2, 0]), tf)
    assert len(ds) == 2 and ds.labels.tolist() == [1, 0] and ds.classes == ["a", "b"]
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        ImageSource(classes=["a", "b"], labels=np.array([0, 2]), images=np.zeros((2, 4, 4), np.uint8))
