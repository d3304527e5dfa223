"""Identity-level (open-set) splits, bad identity folders, and open-set evaluation end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nnlab.config import load_config
from nnlab.datasets import build_data
from nnlab.datasets.identity import holdout_per_identity, identity_split
from nnlab.errors import ConfigError, DataError
from nnlab.evaluation.openset import gallery_mask, open_set_report


def _cfg(path=None, *sets: str):
    base = ['data.split="identity"', 'model.head="arcface"', "data.val_fraction=0.25"]
    if path is not None:
        base += ['data.kind="folder"', f'data.path="{path}"']
    return load_config(None, [*base, *sets])


def _faces(root, identities: int = 8, per_id: int = 4, size=(12, 10), seed: int = 0):
    """A folder of synthetic 'faces': each identity a fixed random pattern plus noise;
    grey and RGB files mixed, every image smaller than the model input."""
    rng = np.random.default_rng(seed)
    for k in range(identities):
        base = rng.integers(0, 256, size, dtype=np.uint8)
        folder = root / f"p{k}"
        folder.mkdir(parents=True)
        for i in range(per_id):
            img = np.clip(base + rng.normal(0, 12, size), 0, 255).astype(np.uint8)
            if (k + i) % 2:
                Image.fromarray(np.stack([img] * 3, -1), "RGB").save(folder / f"{i}.png")
            else:
                Image.fromarray(img, "L").save(folder / f"{i}.pgm")
    return root


# --------------------------------------------------------------------------- the split


def test_open_set_split_keeps_identities_apart():
    labels = np.repeat(np.arange(20), 6)
    cfg = _cfg(None, "data.open_set_identities=5")
    s = identity_split(labels, cfg)
    train_ids, val_ids, test_ids = (set(labels[s[k]].tolist()) for k in ("train", "val", "test"))
    assert len(test_ids) == 5 and len(train_ids) == 15
    assert not (train_ids | val_ids) & test_ids
    assert val_ids <= train_ids
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(len(labels)))  # each image once
    # every training identity keeps images to train on and gives round(6 * 0.25) = 2 to val
    assert (np.bincount(labels[s["val"]], minlength=20)[sorted(train_ids)] == 2).all()
    again = identity_split(labels, cfg)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = identity_split(labels, _cfg(None, "data.open_set_identities=5", "seed=1"))
    assert set(labels[other["test"]].tolist()) != test_ids


def test_holdout_keeps_one_image_to_train_on():
    labels = np.array([0, 1, 1, 2, 2, 2, 2])
    kept, held = holdout_per_identity(labels, np.arange(7), 0.5, seed=0)
    assert set(labels[kept].tolist()) == {0, 1, 2}
    assert np.bincount(labels[held], minlength=3).tolist() == [0, 1, 2]


def test_default_unseen_count_and_bad_counts():
    labels = np.repeat(np.arange(10), 3)
    s = identity_split(labels, _cfg(None, "data.test_fraction=0.3"))
    assert len(np.unique(labels[s["test"]])) == 3
    with pytest.raises(ConfigError, match="open_set_identities"):
        identity_split(labels, _cfg(None, "data.open_set_identities=9"))


def test_orl_split_30_known_10_unseen(shared_data, tmp_path):
    orl = shared_data / "faces" / "orl"
    cfg = _cfg(orl, "data.open_set_identities=10", "data.val_fraction=0.2", "data.image_size=32",
               "eval.gallery_per_id=1")
    data = build_data(cfg, tmp_path)
    assert data.info["sizes"] == {"train": 240, "val": 60, "test": 100}
    assert len(data.classes) == 30  # the classifier covers the training identities only
    unseen = data.info["open_set_identities"]
    assert len(unseen) == 10 and not set(unseen) & set(data.classes)
    for split in ("train", "val"):
        assert data.labels[split].max() < 30
    test = data.labels["test"]
    assert test.min() >= 30
    gallery = gallery_mask(test, 1)
    assert gallery.sum() == 10 and len(np.unique(test[gallery])) == 10
    # gallery and probes come from the unseen people only: no identity shared with training
    source_ids = {f.parent.name for f in (orl / n for n in unseen)}
    assert source_ids.isdisjoint(data.classes)
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["test"] == data.ids["test"].tolist()
    # eval and resume reuse splits.json, even if the seed in the config changed
    again = build_data(cfg.model_copy(update={"seed": 7}), tmp_path)
    assert all(np.array_equal(data.ids[k], again.ids[k]) for k in data.ids)
    assert again.classes == data.classes


# --------------------------------------------------------------------------- bad input


def test_single_image_identity_is_an_error_or_a_counted_skip(tmp_path):
    root = _faces(tmp_path / "faces", identities=6, per_id=3)
    for extra in sorted((root / "p5").iterdir())[1:]:
        extra.unlink()
    cfg = _cfg(root, "data.open_set_identities=2", "data.image_size=16")
    with pytest.raises(DataError, match=r"'p5'.*on_bad"):
        build_data(cfg)
    data = build_data(_cfg(root, "data.open_set_identities=2", "data.image_size=16", 'data.on_bad="skip"'))
    assert data.info["skipped"] == {"too_few_images": 1}
    assert "p5" not in data.classes + data.info["open_set_identities"]
    assert sum(data.info["sizes"].values()) == 5 * 3


def test_empty_identity_folder_and_unreadable_images(tmp_path):
    root = _faces(tmp_path / "faces", identities=6, per_id=3)
    (root / "empty").mkdir()
    (root / "p0" / "bad.png").write_bytes(b"not an image")
    good = (root / "p1" / "1.pgm").read_bytes()  # (p1: 0.png RGB, 1.pgm grey, 2.png RGB)
    (root / "p1" / "truncated.pgm").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="bad.png|truncated.pgm|empty"):
        build_data(_cfg(root, "data.open_set_identities=2", "data.image_size=16"))
    data = build_data(_cfg(root, "data.open_set_identities=2", "data.image_size=16", 'data.on_bad="skip"'))
    assert data.info["skipped"] == {"unreadable": 2, "empty_class": 1}
    assert sum(data.info["sizes"].values()) == 6 * 3


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_grey_rgb_and_small_images_load(tmp_path, channels):
    root = _faces(tmp_path / "faces", identities=6, per_id=3, size=(7, 5))
    data = build_data(_cfg(root, "data.open_set_identities=2", "data.image_size=24", f"data.channels={channels}"))
    for split in ("train", "val", "test"):
        x, _ = next(iter(data.loaders[split]))
        assert x.shape[1:] == (channels, 24, 24)


# --------------------------------------------------------------------------- evaluation


def test_open_set_report_on_ideal_and_confused_embeddings():
    ids = np.repeat(np.arange(4), 3)
    ideal = np.eye(4)[ids] + 0.01 * np.random.default_rng(0).normal(size=(12, 4))
    report, roc = open_set_report(ideal, ids, gallery_per_id=1)
    assert report["rank1"] == 1.0 and report["eer"] == 0.0 and report["tpr_at_fpr_0.001"] == 1.0
    assert (report["gallery"], report["probes"], report["pairs"]) == (4, 8, 28)
    assert roc is not None
    swapped = ideal.copy()
    swapped[[1, 2]] = ideal[[4, 5]]  # identity 0's probes copy identity 1's probes
    report, _ = open_set_report(swapped, ids, gallery_per_id=1)
    assert report["rank1"] == pytest.approx(6 / 8) and report["eer"] > 0
    report, roc = open_set_report(ideal, ids, gallery_per_id=2)  # one probe each: no genuine pair
    assert roc is None and "verification skipped" in report["note"] and report["rank1"] == 1.0


def test_train_and_eval_an_open_set_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_PLOTS", "1")
    from nnlab.evaluation.evaluate import evaluate_run
    from nnlab.training import fit

    root = _faces(tmp_path / "faces", identities=8, per_id=4)
    cfg = _cfg(root, "data.open_set_identities=3", "data.image_size=16", 'model.name="lenet_alpha"',
               "model.embedding_dim=16", "train.epochs=2", "data.batch_size=8", "model.scale=16")
    run = fit(cfg, out=tmp_path / "run")
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert {"rank1", "rank5", "eer", "roc_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001"} <= set(metrics["test"])
    assert "accuracy" in metrics["val"] and "accuracy" not in metrics["test"]
    assert metrics["confusion_split"] == "val"
    assert run.classes() == [c for c in run.classes() if c not in metrics["data"]["open_set_identities"]]
    assert len(run.classes()) == 5
    for plot in ("roc.png", "embeddings.png", "history.png"):
        assert (run.plots / plot).stat().st_size > 1000
    with np.load(run.path / "predictions" / "test_embeddings.npz", allow_pickle=False) as z:
        assert z["embeddings"].shape == (12, 16)
        np.testing.assert_allclose(np.linalg.norm(z["embeddings"], axis=1), 1, rtol=1e-5)
    again = evaluate_run(run.path)  # `nnlab eval RUN`: the same splits, the same numbers
    for key in ("rank1", "rank5", "eer", "tpr_at_fpr_0.01"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-6)
    val = evaluate_run(run.path, split="val")
    assert val["accuracy"] == pytest.approx(metrics["val"]["accuracy"])
