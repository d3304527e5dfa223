"""Galleries on the real ORL faces: the whole path from a folder of people to identities and
"unknown" (rates asserted), fingerprints, enrolling more people, the CLI and its errors, and the
NumPy and faiss search engines against brute force."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest
from image_models import faces_export, faces_run, huge_png, other_faces_run, split_folders
from typer.testing import CliRunner

from nnlab.errors import DataError, NnlabError
from nnlab.inference.faces import search
from nnlab.inference.faces.embed import embed_files, list_images, load_embeddings
from nnlab.inference.faces.gallery import UNKNOWN, Gallery, build_gallery, identification_report, identify_files
from nnlab.inference.models.image import load_image_model


@pytest.fixture(scope="module")
def folders(shared_data):
    return split_folders(faces_run())


@pytest.fixture(scope="module")
def model(shared_data):
    return load_image_model(faces_export())


@pytest.fixture(scope="module")
def gallery(model, folders):
    return build_gallery(model, folders["enrol"])


def test_orl_open_set_identification_at_the_default_threshold(model, gallery, folders):
    """Enrol the 10 unseen people (one image each), identify their 90 other images and the 300
    images of the 30 training identities (impostors) at the threshold the run's ROC gives at FPR 1e-3."""
    assert len(gallery.identities) == 10 and len(gallery) == 10
    probes, impostors = list_images([folders["probes"]]), list_images([folders["impostors"]])
    assert (len(probes.paths), len(impostors.paths)) == (90, 300)
    assert not set(probes.labels) & set(impostors.labels)
    threshold = model.threshold()  # fpr 1e-3, stored in metrics.json at training time
    matches = identify_files(model, gallery, probes.paths + impostors.paths, threshold)
    report = identification_report(matches, probes.labels + impostors.labels, gallery, threshold)
    # rank-1 through the export and the gallery is the run's own open-set rank-1 (torch, metrics.json)
    run_metrics = json.loads((faces_run() / "metrics.json").read_text())["test"]
    assert report["rank1"] == pytest.approx(run_metrics["rank1"], abs=1.5 / 90)
    assert report["rank1"] >= 0.6  # chance is 0.1
    # enrolled people are identified, strangers rejected: the impostor accept rate stays near the
    # pair FPR times the 10 enrolled images, far below the genuine accept rate
    assert report["false_accept_rate"] <= 0.03
    assert report["detection_identification_rate"] >= 0.1
    assert report["false_reject_rate"] == pytest.approx(
        np.mean([m.similarity < threshold for m in matches[:90]]))
    assert report["detection_identification_rate"] > 5 * report["false_accept_rate"]
    # one stranger, all ten images: (nearly) always unknown
    stranger = impostors.labels[0]
    theirs = [m for m, lab in zip(matches[90:], impostors.labels, strict=True) if lab == stranger]
    assert len(theirs) == 10 and sum(m.identity == UNKNOWN for m in theirs) >= 9
    # every answer is the best identity or unknown, with a different runner-up
    for m in matches:
        assert m.identity in (m.best, UNKNOWN) and m.runner_up != m.best
        assert m.similarity >= m.runner_up_similarity


def test_gallery_round_trip_and_add(model, gallery, folders, tmp_path):
    saved = Gallery.load(gallery.save(tmp_path / "g"))
    z = np.load(tmp_path / "g" / "embeddings.npz", allow_pickle=False)  # no pickled objects
    assert set(z.files) == {"embeddings", "labels", "means"} and z["means"].shape == (10, 128)
    assert saved.identities == gallery.identities and np.array_equal(saved.embeddings, gallery.embeddings)
    # enrolling in two steps gives the gallery of one step
    half = tmp_path / "half"
    for i, person in enumerate(sorted((folders["enrol"]).iterdir())):
        shutil.copytree(person, (half / ("a" if i < 5 else "b")) / person.name, symlinks=True)
    two = build_gallery(model, half / "a")
    assert two.add(model, half / "b") == 5
    assert sorted(two.identities) == sorted(gallery.identities)
    order = [two.identities.index(n) for n in gallery.identities]
    assert np.abs(two.means()[order] - gallery.means()).max() < 1e-6


def test_gallery_refuses_another_models_embeddings(gallery, folders, tmp_path):
    other = load_image_model(other_faces_run())
    assert other.task == "embedding" and other.fingerprint != gallery.fingerprint
    with pytest.raises(NnlabError, match="fingerprint"):
        identify_files(other, gallery, list_images([folders["probes"]]).paths[:2], 0.5)
    with pytest.raises(NnlabError, match="fingerprint"):
        gallery.add(other, folders["enrol"])
    emb = embed_files(other, list_images([folders["probes"]]).paths[:2])
    with pytest.raises(NnlabError, match="fingerprint"):
        gallery.enroll(emb, ["x", "y"], ["a", "b"], other.fingerprint)


def test_cli_embed_build_add_identify(folders, tmp_path):
    from nnlab.cli import app

    runner = CliRunner()
    export = str(faces_export())
    result = runner.invoke(app, ["embed", export, str(folders["probes"]), "--out", str(tmp_path / "e.npz")])
    assert result.exit_code == 0, result.output
    emb, files, fp = load_embeddings(tmp_path / "e.npz")
    assert emb.shape == (90, 128) and len(set(files.labels)) == 10 and fp == load_image_model(export).fingerprint
    result = runner.invoke(app, ["gallery", "build", export, str(folders["enrol"]), "--out", str(tmp_path / "g")])
    assert result.exit_code == 0 and "10 people" in result.output, result.output
    result = runner.invoke(app, ["identify", export, str(tmp_path / "g"), str(folders["probes"]),
                                 "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 0, result.output
    assert "search: numpy" in result.output and "FPR 0.001" in result.output and "rank1" in result.output
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 90 and rows[0].keys() == {"path", "label", "identity", "similarity", "best", "runner_up",
                                                  "runner_up_similarity", "threshold"}
    rank1 = np.mean([r["best"] == r["label"] for r in rows])
    assert f"rank1 {rank1:.4f}" in result.output
    # an explicit threshold of -1 accepts everyone
    result = runner.invoke(app, ["identify", export, str(tmp_path / "g"), str(folders["probes"]),
                                 "--out", str(tmp_path / "all.csv"), "--threshold", "-1", "--search", "faiss-flat"])
    assert result.exit_code == 0 and "90 identified, 0 unknown" in result.output, result.output
    assert "search: faiss-flat" in result.output


def test_cli_errors_on_corrupt_oversized_and_wrong_model(folders, tmp_path, monkeypatch, capsys):
    from nnlab.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (tmp_path / "huge").mkdir()
    huge_png(tmp_path / "huge" / "big.png")
    export = str(faces_export())
    gallery_dir = tmp_path / "g"
    build_gallery(load_image_model(export), folders["enrol"]).save(gallery_dir)

    def fails(*args: str) -> str:
        """The real entry point (nnlab.cli.main) in this process: exit status 2 and one line, no traceback."""
        monkeypatch.setattr(sys, "argv", ["nnlab", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err and err.startswith("error: "), err
        return err

    out = str(tmp_path / "m.csv")
    assert "cannot read image" in fails("identify", export, str(gallery_dir), str(bad), "--out", out)
    assert "at most 40,000,000 pixels" in fails("identify", export, str(gallery_dir), str(tmp_path / "huge"),
                                                "--out", out)
    assert "fingerprint" in fails("identify", str(other_faces_run()), str(gallery_dir), str(bad), "--out", out)
    assert "no verification threshold at FPR 0.05" in fails("identify", export, str(gallery_dir), str(bad),
                                                             "--out", out, "--fpr", "0.05")


# ------------------------------------------------------------------ search engines


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_numpy_search_matches_brute_force_in_small_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng.normal(size=(1000, 24))), _unit(rng.normal(size=(300, 24)))
    sims = queries @ vectors.T
    ref = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    monkeypatch.setattr(search, "BLOCK_ELEMENTS", 5000)  # many vector blocks and query blocks
    scores, rows = search.NumpyIndex(vectors).search(queries, 7)
    assert np.array_equal(rows, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, ref, 1), atol=1e-6)
    scores, rows = search.NumpyIndex(vectors[:3]).search(queries[:2], 5)  # fewer vectors than k
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all() and (rows[:, :3] >= 0).all()


def test_faiss_indexes_agree_with_exact_search():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    centres = _unit(rng.normal(size=(400, 64)))
    vectors = _unit(np.repeat(centres, 10, axis=0) + 0.3 * rng.normal(size=(4000, 64)) / 8)
    queries = _unit(centres[:200] + 0.3 * rng.normal(size=(200, 64)) / 8)
    exact_s, exact_r = search.NumpyIndex(vectors).search(queries, 5)
    flat_s, _ = search.FaissIndex(vectors, "flat").search(queries, 5)
    np.testing.assert_allclose(flat_s, exact_s, atol=1e-5)
    for kind in ("ivf", "hnsw", "pq"):
        _, rows = search.FaissIndex(vectors, kind).search(queries, 1)
        assert (rows[:, 0] == exact_r[:, 0]).mean() >= 0.95, kind


def test_auto_backend_and_missing_faiss(monkeypatch):
    vectors = _unit(np.random.default_rng(2).normal(size=(100, 8)))
    assert search.make_index(vectors).name == "numpy"
    monkeypatch.setattr(search, "AUTO_FAISS_SIZE", 50)
    if search.faiss_available():
        assert search.make_index(vectors).name == "faiss-pq"  # the default above the size
    monkeypatch.setattr(search, "faiss_available", lambda: False)
    index = search.make_index(vectors)
    assert index.name == "numpy" and "pip install 'nnlab[faiss]'" in index.note

    def no_faiss():
        raise NnlabError(search.FAISS_MISSING)

    monkeypatch.setattr(search, "import_faiss", no_faiss)
    with pytest.raises(NnlabError, match=r"nnlab\[faiss\]"):
        search.make_index(vectors, "faiss-ivf")
    with pytest.raises(NnlabError, match="unknown search backend"):
        search.make_index(vectors, "annoy")


def test_list_images_kinds(folders, tmp_path):
    person = next(iter(sorted(folders["probes"].iterdir())))
    one = list_images([person])
    assert one.labels is None and len(one.paths) == 9
    assert list_images([one.paths[0], one.paths[1]]).paths == one.paths[:2]
    with pytest.raises(DataError, match="no such file"):
        list_images([tmp_path / "missing.png"])


def test_gallery_build_refuses_to_replace_a_gallery_without_overwrite(model, folders, tmp_path):
    from nnlab.cli import app

    export = str(faces_export())
    out = tmp_path / "g"
    runner = CliRunner()
    first = runner.invoke(app, ["gallery", "build", export, str(folders["enrol"]), "--out", str(out)])
    assert first.exit_code == 0, first.output
    one = tmp_path / "one"
    shutil.copytree(folders["enrol"] / sorted(p.name for p in folders["enrol"].iterdir())[0], one / "someone")
    again = runner.invoke(app, ["gallery", "build", export, str(one), "--out", str(out)])
    assert isinstance(again.exception, NnlabError) and "--overwrite" in str(again.exception)
    assert len(Gallery.load(out).identities) == 10  # untouched
    replaced = runner.invoke(app, ["gallery", "build", export, str(one), "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert Gallery.load(out).identities == ["someone"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    bad = runner.invoke(app, ["gallery", "build", export, str(one), "--out", str(tmp_path / "mine"), "--overwrite"])
    assert isinstance(bad.exception, NnlabError) and (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_kill_at_any_write_of_gallery_add_leaves_the_old_or_the_new_gallery(model, gallery, folders, tmp_path,
                                                                            monkeypatch):
    """What a kill leaves is the disk at that moment: the gallery folder is copied at every write point of
    one `add` and must load as the old or the new gallery; one real SIGKILL checks the same end to end."""
    import subprocess

    from nnlab import fileio
    from nnlab.inference.faces import gallery as gallery_mod

    path = gallery.save(tmp_path / "g")
    old = (len(gallery), list(gallery.identities))
    newcomers = tmp_path / "new"
    shutil.copytree(folders["probes"] / sorted(p.name for p in folders["probes"].iterdir())[0], newcomers / "newbie")
    snapshots = []

    def snapshot(name: str) -> None:
        where = tmp_path / f"snap-{len(snapshots)}-{name}"
        shutil.copytree(path, where)
        snapshots.append(where)

    monkeypatch.setattr(fileio, "kill_point", snapshot)
    monkeypatch.setattr(gallery_mod, "kill_point", snapshot)
    grown = Gallery.load(path)
    grown.add(model, newcomers)
    grown.save(path, overwrite=True)
    new = (len(grown), list(grown.identities))
    assert len(snapshots) >= 4  # embeddings, meta (tmp and renamed), the swap
    seen = {(len(g), tuple(g.identities)) for g in map(Gallery.load, snapshots)}
    assert seen <= {(old[0], tuple(old[1])), (new[0], tuple(new[1]))} and len(seen) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing left beside it
    # the process boundary is what this part tests: a real SIGKILL at the last write before the swap
    env = dict(__import__("os").environ, NNLAB_TEST_KILL_AT="gallery-meta-written:1")
    killed = subprocess.run([sys.executable, "-m", "nnlab", "gallery", "add", str(faces_export()), str(path),
                             str(newcomers)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    after = Gallery.load(path)
    assert (len(after), list(after.identities)) == new  # the gallery as it was before the killed add


def test_a_kill_at_any_write_of_gallery_build_over_a_gallery_leaves_the_old_or_the_new(model, gallery, folders,
                                                                                     tmp_path, monkeypatch):
    """`gallery build --overwrite` over an existing gallery: at every write point the folder loads as the
    old gallery or the new one (the same staged save as `add`, replaced whole)."""
    from nnlab import fileio
    from nnlab.inference.faces import gallery as gallery_mod

    path = gallery.save(tmp_path / "g")
    one = tmp_path / "one"
    shutil.copytree(folders["enrol"] / sorted(p.name for p in folders["enrol"].iterdir())[0], one / "someone")
    snapshots = []

    def snapshot(name: str) -> None:
        snapshots.append(shutil.copytree(path, tmp_path / f"snap-{len(snapshots)}-{name}"))

    monkeypatch.setattr(fileio, "kill_point", snapshot)
    monkeypatch.setattr(gallery_mod, "kill_point", snapshot)
    build_gallery(model, one).save(path, overwrite=True)
    assert len(snapshots) >= 3
    seen = {tuple(Gallery.load(s).identities) for s in snapshots}
    assert seen == {tuple(gallery.identities), ("someone",)}
    assert Gallery.load(path).identities == ["someone"]


def test_embed_and_identify_outputs_say_what_they_wrote_and_quote_formulas(model, gallery, folders, tmp_path):
    from nnlab.inference.faces.embed import save_embeddings
    from nnlab.inference.faces.gallery import Match, write_matches

    files = list_images([folders["enrol"]])
    emb = embed_files(model, files.paths[:2])
    written = save_embeddings(tmp_path / "emb", type(files)(files.paths[:2], files.labels[:2]), emb, model.fingerprint)
    assert written == tmp_path / "emb.npz" and written.is_file() and not (tmp_path / "emb").exists()
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        save_embeddings(tmp_path / "folder", files, emb, model.fingerprint)
    with pytest.raises(DataError, match="is a folder"):
        write_matches(tmp_path / "folder", [], [])
    m = Match("=HYPERLINK(\"x\")", 0.9, "=HYPERLINK(\"x\")", "@SUM(A1)", 0.5)
    out = write_matches(tmp_path / "m.csv", [tmp_path / "a.png"], [m], ["-1+1"])
    rows = list(csv.reader(out.open()))
    assert rows[1][1:3] == ["'-1+1", "'=HYPERLINK(\"x\")"] and rows[1][5] == "'@SUM(A1)"
    assert not list(tmp_path.glob("*.tmp"))


def test_adding_the_same_folder_twice_enrols_nothing_twice_and_unknown_is_no_name(model, gallery, folders,
                                                                                tmp_path):
    grown = Gallery.load(gallery.save(tmp_path / "g"))
    before = (len(grown), list(grown.identities))
    assert grown.add(model, folders["enrol"]) == 0 and grown.skipped == before[0]
    assert (len(grown), list(grown.identities)) == before
    stranger = tmp_path / "people" / "unknown"
    first = sorted((folders["probes"] / sorted(p.name for p in folders["probes"].iterdir())[0]).iterdir())[0]
    stranger.mkdir(parents=True)
    shutil.copy(first, stranger / first.name)
    with pytest.raises(DataError, match="answer for a face nobody enrolled"):
        grown.add(model, tmp_path / "people")
    assert (len(grown), list(grown.identities)) == before
