"""`nnlab predict` on drawings: Kaggle submissions (one row per input row, in order, fallback rows
for unreadable drawings), ensembles, flip TTA, raw ndjson and store inputs; the demo recipe."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nnlab.cli.app import app
from nnlab.config import load_config
from nnlab.errors import NnlabError
from nnlab.inference.kaggle.drawing_rows import read_drawing_rows
from nnlab.inference.kaggle.submission import predict_drawings
from nnlab.ingest.writers import write_csv, write_ndjson
from nnlab.runs.run import Run
from nnlab.store.format import StrokeStore
from nnlab.strokes.drawing import Drawing, PackedSource, StrokeBatch
from nnlab.strokes.simplify import simplify_drawing, to_canvas
from nnlab.strokes.synth import synth_drawings
from nnlab.training import fit

ROOT = Path(__file__).resolve().parents[1]
# Synthetic shapes under Quick, Draw!-like words (two with spaces), with unequal class sizes so
# that "the three most frequent training classes" is not simply the first three.
WORDS = {"circle": "ice cream", "square": "cat", "star": "The Eiffel Tower", "house": "house",
         "zigzag": "snowman"}
COUNTS = {"circle": 12, "square": 40, "star": 70, "house": 22, "zigzag": 55}


def drawings_with_words(seed: int = 0) -> list[Drawing]:
    out = []
    for shape, n in COUNTS.items():
        for d in synth_drawings([shape], n, seed=seed):
            d.word = WORDS[shape]
            out.append(d)
    return out


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "doodles"
    StrokeStore.from_drawings(drawings_with_words()).save(path)
    return path


def train_tiny(store_dir: Path, out: Path, seed: int = 0) -> Run:
    cfg = load_config(None, [f"data.path={json.dumps(str(store_dir))}", f"seed={seed}"], base={
        "name": "tiny", "data": {"kind": "strokes", "image_size": 28, "encoding": "time-decay",
                                 "batch_size": 32, "val_fraction": 0.2, "test_fraction": 0.0},
        "model": {"name": "lenet_alpha"}, "optim": {"name": "adam", "lr": 0.003},
        "train": {"epochs": 2, "steps_per_epoch": 30, "threads": 1}, "eval": {"main_metric": "map3"}})
    threads = torch.get_num_threads()
    try:
        return fit(cfg, out=out)
    finally:
        torch.set_num_threads(threads)  # train.threads is process-wide


@pytest.fixture(scope="module")
def run(store_dir, tmp_path_factory) -> Run:
    return train_tiny(store_dir, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="module")
def test_drawings() -> list[Drawing]:
    """Unlabelled drawings to predict, from another seed, in a shuffled order."""
    ds = drawings_with_words(seed=7)
    order = np.random.default_rng(1).permutation(len(ds))[:40]
    out = []
    for k in order:
        d = ds[k]
        out.append(Drawing(strokes=d.strokes, key_id=9_000_000_000_000 + int(k), countrycode="GB"))
    return out


def write_kaggle_test_csv(path: Path, drawings: list[Drawing]) -> tuple[list[str], list[int], list[int]]:
    """A test_simplified.csv with malformed rows spliced in; returns every row's key_id in file
    order, the malformed rows' positions among the rows and their line numbers in the file."""
    write_csv(drawings, path, test=True)
    lines = path.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    bad = {
        3: '9100000000000003,US,"[[[1, 2, 3], [4, 5]]]"',  # x and y differ in length
        8: '9100000000000008,US,"[[[1, 2], [3, 4]], [[5, 6"',  # the JSON is cut off
        15: "9100000000000015,US",  # a column short
        21: '9100000000000021,US,"[]"',  # no strokes
        30: 'oops,US,"[[[1, 2], [3, 4]]]"',  # the key_id is not a number
    }
    out = [header]
    ids, positions, lines = [], [], []
    for k, row in enumerate(rows):
        if k in bad:
            out.append(bad[k])
            positions.append(len(ids))
            lines.append(len(out))
            ids.append(bad[k].split(",")[0])
        if k == 10:
            out.append("   ")  # a blank line is no row
        out.append(row)
        ids.append(row.split(",")[0])
    path.write_text("\n".join(out) + "\n")
    return ids, positions, lines


def read_submission(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["key_id", "word"]
    return rows[1:]


def predict_cli(*args) -> tuple[int, str]:
    """`nnlab predict ARGS` in this process: (exit code, stdout and stderr); a user error raises."""
    result = CliRunner().invoke(app, ["predict", *map(str, args)])
    if isinstance(result.exception, NnlabError):
        raise result.exception
    return result.exit_code, result.output


def expected_top3(run: Run, drawings: list[Drawing], **kw) -> list[str]:
    probs = predict_drawings(run, PackedSource(StrokeBatch.from_drawings(drawings)), **kw)
    labels = [c.replace(" ", "_") for c in run.classes()]
    return [" ".join(labels[j] for j in np.argsort(-p, kind="stable")[:3]) for p in probs]


def test_kaggle_csv_with_malformed_rows(run, test_drawings, tmp_path):
    src = tmp_path / "test_simplified.csv"
    ids, bad, _ = write_kaggle_test_csv(src, test_drawings)
    out = tmp_path / "submission.csv"
    code, output = predict_cli(run.path, src, "--out", out)
    assert code == 0, output
    rows = read_submission(out)
    assert len(rows) == len(test_drawings) + len(bad)  # one row per input row, none for the blank line
    assert [r[0] for r in rows] == ids  # input order, ids as written (even "oops")
    assert f"wrote {len(rows)} rows" in output
    assert f"{len(bad)} of {len(rows)} drawings" in output and "could not be parsed" in output

    vocab = set(Path(run.path / "classes.txt").read_text().splitlines())
    labels = {w.replace(" ", "_") for w in vocab}
    for _, guess in rows:
        words = guess.split(" ")
        assert len(words) == 3 and len(set(words)) == 3 and set(words) <= labels
    assert any("The_Eiffel_Tower" in g or "ice_cream" in g for _, g in rows)

    # the unreadable rows hold the three most frequent training classes, most frequent first
    counts = json.loads((run.path / "metrics.json").read_text())["data"]["train_counts"]
    classes = run.classes()
    by_size = sorted(range(len(classes)), key=lambda j: -counts[j])
    fallback = " ".join(classes[j].replace(" ", "_") for j in by_size[:3])
    assert fallback == "The_Eiffel_Tower snowman cat"  # 70, 55, 40 drawings before the split
    assert all(rows[k][1] == fallback for k in bad)

    # the readable rows hold exactly the model's own top 3 for their drawing: nothing shifted
    good = [k for k in range(len(rows)) if k not in bad]
    expected = expected_top3(run, test_drawings)
    assert [rows[k][1] for k in good] == expected
    assert len({e.split()[0] for e in expected}) > 1  # the check could see a shift


def test_balance_caps_first_choices_and_keeps_rows_in_place(run, test_drawings, tmp_path):
    src = tmp_path / "test_simplified.csv"
    ids, bad, _ = write_kaggle_test_csv(src, test_drawings)
    plain_out, balanced_out = tmp_path / "plain.csv", tmp_path / "balanced.csv"
    assert predict_cli(run.path, src, "--out", plain_out)[0] == 0
    code, output = predict_cli(run.path, src, "--out", balanced_out, "--balance")
    assert code == 0, output
    plain, rows = read_submission(plain_out), read_submission(balanced_out)
    assert [r[0] for r in rows] == ids  # same rows, same order, bad rows included
    good = [k for k in range(len(rows)) if k not in bad]
    share = -(-len(good) // len(run.classes()))  # ceil(parsed rows / classes)
    firsts = [rows[k][1].split()[0] for k in good]
    assert max(firsts.count(w) for w in set(firsts)) <= share
    assert max([plain[k][1].split()[0] for k in good].count(w) for w in set(firsts)) > share  # it had to act
    changed = sum(rows[k][1] != plain[k][1] for k in good)
    assert f"{changed} of {len(good)} rows changed their top 3" in output
    assert all(rows[k][1] == plain[k][1] for k in bad)  # fallback rows are left alone
    assert all(sorted(rows[k][1].split()) != [] and len(set(rows[k][1].split())) == 3 for k in good)


def test_gzip_csv_and_line_numbers_in_the_warning(run, test_drawings, tmp_path):
    src = tmp_path / "test_simplified.csv"
    _, _, lines = write_kaggle_test_csv(src, test_drawings)
    gz = tmp_path / "test_simplified.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    from nnlab.inference.kaggle.submission import predict_submission

    n1, warn1 = predict_submission([run], src, tmp_path / "a.csv")
    n2, warn2 = predict_submission([run], gz, tmp_path / "b.csv")
    assert n1 == n2 == len(test_drawings) + 5
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert warn1 == warn2.replace(".csv.gz", ".csv")
    assert "lines " + ", ".join(map(str, lines)) + ")" in warn1 and lines[0] == 5  # line 1 is the header


def test_ensemble_of_a_run_with_itself_equals_the_run(run, test_drawings, store_dir, tmp_path):
    src = tmp_path / "test.csv"
    write_csv(test_drawings, src, test=True)
    assert predict_cli(run.path, src, "--out", tmp_path / "one.csv")[0] == 0
    assert predict_cli(run.path, run.path, src, "--out", tmp_path / "two.csv")[0] == 0
    assert predict_cli(run.path, run.path, src, "--out", tmp_path / "w.csv", "--weights", "1,3")[0] == 0
    one = (tmp_path / "one.csv").read_text()
    assert (tmp_path / "two.csv").read_text() == one
    assert (tmp_path / "w.csv").read_text() == one

    # weights do weigh: another run with weight 0 leaves the first run's answer
    other = train_tiny(store_dir, tmp_path / "other", seed=3)
    assert predict_cli(run.path, other.path, src, "--out", tmp_path / "w0.csv", "--weights", "1,0")[0] == 0
    assert (tmp_path / "w0.csv").read_text() == one
    assert predict_cli(other.path, src, "--out", tmp_path / "o.csv")[0] == 0
    assert predict_cli(run.path, other.path, src, "--out", tmp_path / "w01.csv", "--weights", "0,2")[0] == 0
    assert (tmp_path / "w01.csv").read_text() == (tmp_path / "o.csv").read_text() != one

    with pytest.raises(NnlabError, match="--weights"):
        predict_cli(run.path, run.path, src, "--out", tmp_path / "x.csv", "--weights", "1")


def test_flip_tta_averages_with_the_mirrored_drawing(run, test_drawings):
    source = PackedSource(StrokeBatch.from_drawings(test_drawings))
    plain = predict_drawings(run, source)
    mirrored = [Drawing(strokes=[np.column_stack([255 - s[:, 0], s[:, 1]]) for s in d.strokes])
                for d in test_drawings]
    flipped = predict_drawings(run, PackedSource(StrokeBatch.from_drawings(mirrored)))
    tta = predict_drawings(run, source, tta="flip")
    np.testing.assert_allclose(tta, (plain + flipped) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, plain)
    with pytest.raises(NnlabError, match="flip"):
        predict_drawings(run, source, tta="rotate")


def raw_version(d: Drawing, k: int) -> Drawing:
    """The drawing as raw screen data: scaled, moved, float, with a time channel."""
    rng = np.random.default_rng(k)
    scale, shift = rng.uniform(1.5, 3.0), rng.uniform(20, 300, 2)
    t0, strokes = 0.0, []
    for s in d.strokes:
        xy = s[:, :2].astype(float) * scale + shift + rng.normal(0, 0.3, (len(s), 2))
        t = t0 + np.arange(len(s)) * 17.0
        t0 = t[-1] + 200
        strokes.append(np.column_stack([xy, t]))
    return Drawing(strokes=strokes, word=d.word, key_id=d.key_id, countrycode="FR", timestamp="")


def test_raw_ndjson_is_simplified_on_the_fly(run, test_drawings, tmp_path):
    raw = [raw_version(d, k) for k, d in enumerate(test_drawings[:15])]
    write_ndjson(raw, tmp_path / "raw.ndjson")
    simple = [simplify_drawing(d) for d in raw]
    write_ndjson(simple, tmp_path / "simple.ndjson")

    rows = read_drawing_rows(tmp_path / "raw.ndjson")
    raw_batch = rows.drawings.batch(np.arange(len(rows.drawings)))
    assert raw_batch.time is not None  # read as raw; each run takes it as it was trained
    got = to_canvas(raw_batch, "simplify")  # a run trained on simplified drawings simplifies it
    want = StrokeBatch.from_drawings(simple)
    assert got.points.dtype == np.uint8
    np.testing.assert_array_equal(got.points, want.points)
    np.testing.assert_array_equal(got.stroke_ptr, want.stroke_ptr)
    np.testing.assert_array_equal(got.drawing_ptr, want.drawing_ptr)

    assert predict_cli(run.path, tmp_path / "raw.ndjson", "--out", tmp_path / "r.csv")[0] == 0
    assert predict_cli(run.path, tmp_path / "simple.ndjson", "--out", tmp_path / "s.csv")[0] == 0
    assert (tmp_path / "r.csv").read_text() == (tmp_path / "s.csv").read_text()
    assert [r[0] for r in read_submission(tmp_path / "r.csv")] == [str(d.key_id) for d in raw]


def test_ndjson_bad_lines_keep_their_place(run, test_drawings, tmp_path):
    path = tmp_path / "in.ndjson"
    write_ndjson(test_drawings[:6], path)
    lines = path.read_text().splitlines()
    lines.insert(2, '{"key_id":"123","drawing":[[[1,2],[3]]]}')
    lines.insert(4, '{"key_id": 456, "drawing": [[[1,2],[3,4]]')  # cut off
    path.write_text("\n".join(lines) + "\n")
    code, output = predict_cli(run.path, path, "--out", tmp_path / "s.csv")
    assert code == 0, output
    rows = read_submission(tmp_path / "s.csv")
    ids = [str(d.key_id) for d in test_drawings[:6]]
    assert [r[0] for r in rows] == ids[:2] + ["123"] + ids[2:3] + ["456"] + ids[3:]
    assert "lines 3, 5" in output
    assert [rows[k][1] for k in (0, 1, 3, 5, 6, 7)] == expected_top3(run, test_drawings[:6])


def test_store_input(run, test_drawings, tmp_path):
    store = tmp_path / "test-store"
    StrokeStore.from_drawings(test_drawings).save(store)
    write_csv(test_drawings, tmp_path / "test.csv", test=True)
    assert predict_cli(run.path, store, "--out", tmp_path / "a.csv")[0] == 0
    assert predict_cli(run.path, tmp_path / "test.csv", "--out", tmp_path / "b.csv")[0] == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert len(read_submission(tmp_path / "a.csv")) == len(test_drawings)


def test_training_counts_are_recomputed_for_runs_without_them(run, tmp_path):
    from nnlab.inference.kaggle.submission import train_class_counts

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "metrics.json").unlink()
    counts = train_class_counts(Run.open(copy))
    saved = json.loads((run.path / "metrics.json").read_text())["data"]["train_counts"]
    assert counts.tolist() == saved and sum(saved) < sum(COUNTS.values())


def test_demo_recipe_smoke(tmp_path, monkeypatch):
    """The embedded demo's recipe, cut to a few steps: a run with plots and a sample grid."""
    monkeypatch.setenv("NNLAB_PLOTS", "1")
    out = tmp_path / "demo"
    cfg = load_config(ROOT / "recipes" / "doodles-demo.toml",
                      ["train.epochs=1", "train.steps_per_epoch=3", "data.per_class=30", "data.num_workers=0"])
    assert cfg.data.kind == "synth" and cfg.model.name.startswith("timm:") and cfg.eval.main_metric == "map3"
    fit(cfg, out=out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["val"]["map3"] <= 1 and "top_confusions" in metrics
    assert (out / "plots" / "history.png").is_file() and (out / "plots" / "confusion.png").is_file()
    result = CliRunner().invoke(app, ["data", "show", str(out), "--n", "12"])
    assert result.exit_code == 0, result.output
    png = out / "plots" / "samples.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG" and str(png) in result.output


def test_predict_errors_through_the_entry_point(run, tmp_path, cli):
    """A user error is one line on stderr and exit status 2."""
    proc = cli("predict", run.path, tmp_path / "missing.csv", "--out", tmp_path / "s.csv", ok=False)
    assert proc.returncode == 2 and "missing.csv" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()
